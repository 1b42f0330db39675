"""The one interface every destination implements, and the types it exchanges with the engine.

The engine builds one ``Destination`` per run and calls ``check_connection()``, then
``write(batch)`` for each ``Batch`` of at most ``batch_size`` operations, then ``close()``.

Delivery contract:

- ``write`` applies the batch and returns the rows it could not apply (``RowResult`` with
  ``ok=False`` and a reason); every other operation of the batch counts as delivered. Row
  failures are returned, never raised. A failure of the whole batch (connection lost after
  every retry, authentication refused, ...) raises ``DestinationError``: the engine stops
  the run; batches confirmed before it stay delivered, the rest is planned again next run.
- Each ``Batch`` has a deterministic ``id`` (a hash of its operations' ids) and each
  ``Operation`` a deterministic ``id`` (sync, operation, key, row version). A batch that
  is sent again (a retry, or a re-run after a crash before the engine recorded it) carries
  the same ids, so destinations apply it idempotently: upsert/delete by key, set semantics
  for audiences, or deduplication by id (the webhook contract).
- Destinations with ``delivers_on_commit = True`` (files) only stage data in ``write``;
  ``prepare()`` makes the staged data durable and returns a token, the engine records the
  token with the delivered rows in one transaction, then ``commit(token)`` publishes it.
  ``commit`` is idempotent: a re-run after a crash calls it again with the same token.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

#: Sync modes (``syncs.yml`` key ``mode``) and the operations they send per diff kind.
MODE_OPERATIONS: dict[str, dict[str, str]] = {
    "upsert": {"added": "upsert", "changed": "upsert"},
    "update": {"added": "update", "changed": "update"},
    "insert": {"added": "insert"},
    "mirror": {"added": "upsert", "changed": "upsert", "removed": "delete"},
    "audience": {"added": "add", "changed": "add", "removed": "remove"},
}
MODES = tuple(MODE_OPERATIONS)
#: Operations that take a row out of the destination (tombstones in the delivery journal).
REMOVING_OPERATIONS = ("delete", "remove")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class DestinationError(RuntimeError):
    """The destination cannot be used, or a whole batch failed (the run stops)."""


class StagedDataLost(DestinationError):
    """``commit`` found neither the staged data nor its published result (someone removed
    it): the engine forgets those rows as delivered so that the next run sends them again."""


# --------------------------------------------------------------------------- secrets


class Secret:
    """A secret read from an environment variable. It never shows its value in ``repr``,
    ``str``, logs or tracebacks; ``reveal()`` returns it for the one place that needs it."""

    __slots__ = ("env_var", "_value")

    def __init__(self, env_var: str, value: str) -> None:
        self.env_var = env_var
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(${self.env_var})"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("a Secret cannot be pickled")


def is_env_var_name(value: Any) -> bool:
    return isinstance(value, str) and bool(_ENV_NAME.match(value))


# --------------------------------------------------------------------------- JSON


def json_default(value: Any) -> Any:
    """``json.dumps`` fallback for the Python values DuckDB returns."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        if value.as_tuple().exponent >= 0:  # integer-scale decimal, e.g. DECIMAL(18,0)
            return int(value)
        as_float = float(value)
        # Keep a number when the float round-trips to the same decimal, else keep every digit.
        return as_float if Decimal(repr(as_float)) == value else str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _without_nan(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nan(v) for v in value]
    return value


_ENCODER = json.JSONEncoder(
    default=json_default, ensure_ascii=False, allow_nan=False, separators=(",", ":")
)


def to_json(value: Any) -> str:
    """Serialize to strict JSON (no NaN), using ``json_default`` for non-JSON types."""
    try:
        return _ENCODER.encode(value)
    except ValueError:  # NaN or Infinity somewhere: rare, so only then walk the value
        return _ENCODER.encode(_without_nan(value))


def from_json(text: str) -> Any:
    """Decode canonical JSON; non-integer numbers become ``Decimal`` (exact digits)."""
    return json.loads(text, parse_float=Decimal)


# --------------------------------------------------------------------------- operations


class Operation(NamedTuple):
    """One change to apply at the destination (a tuple: a million are cheap to make).

    ``op`` is one of ``upsert``, ``update``, ``insert``, ``delete`` (tables, APIs, files)
    or ``add``, ``remove`` (audiences); the sync's mode decides which. ``key`` is the
    primary key as text. ``fields_json`` is the row as canonical JSON rendered by DuckDB
    (decimals as numbers, ISO 8601 timestamps, no NaN): for ``delete``/``remove`` the last
    values delivered. ``previous_json`` is the last delivered version of a changed row
    (None for a new row). ``id`` identifies this operation on this version of the row: the
    same change sent twice carries the same id.
    """

    op: str
    key: str
    fields_json: str
    previous_json: str | None = None
    id: str = ""

    @property
    def fields(self) -> dict[str, Any]:
        """The fields decoded (decimals as ``Decimal``; dates and timestamps as ISO text)."""
        return from_json(self.fields_json)

    @property
    def previous(self) -> dict[str, Any] | None:
        return None if self.previous_json is None else from_json(self.previous_json)

    @classmethod
    def of(
        cls,
        op: str,
        key: str,
        fields: Mapping[str, Any],
        previous: Mapping[str, Any] | None = None,
        id: str = "",
    ) -> Operation:
        """Build an operation from Python values (tests, hand-made batches)."""
        previous_json = None if previous is None else to_json(dict(previous))
        return cls(op, key, to_json(dict(fields)), previous_json, id)


@dataclass(frozen=True, slots=True)
class Batch:
    """Operations sent together. ``id`` is their idempotency key (same operations, same id)."""

    id: str
    number: int
    operations: list[Operation]

    def __len__(self) -> int:
        return len(self.operations)

    def __iter__(self):
        return iter(self.operations)


@dataclass(frozen=True, slots=True)
class RowResult:
    """A row the destination did not apply, with the reason (``ok=False``); it is recorded
    in ``reverse_etl.sync_row_errors`` and planned again by the next run."""

    key: str
    ok: bool
    error: str | None = None


@dataclass(frozen=True)
class SyncContext:
    """What a destination may know about the run it serves."""

    sync_name: str
    run_id: str
    base_dir: Path
    field_names: tuple[str, ...] = ()  # destination fields in mapping order
    key_field: str | None = None  # the destination field holding the primary key
    mode: str = "mirror"
    field_types: Mapping[str, str] = field(default_factory=dict)  # field -> DuckDB type
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Setting:
    """One destination setting of ``syncs.yml``: what it is, its type and its default."""

    description: str
    kind: str = "str"  # str | int | number | bool | env (an environment variable name)
    default: Any = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None


#: Settings every destination that talks over the network accepts.
NETWORK_SETTINGS: dict[str, Setting] = {
    "timeout_seconds": Setting(
        "seconds to wait for a response before retrying", "number", 30.0, minimum=0.01
    ),
    "max_attempts": Setting(
        "attempts per request before the run stops (1 = no retry)", "int", 5, minimum=1
    ),
    "backoff_seconds": Setting(
        "first wait before a retry; doubled at each attempt", "number", 1.0, minimum=0
    ),
    "max_backoff_seconds": Setting(
        "longest wait between attempts, and the longest Retry-After honoured",
        "number",
        60.0,
        minimum=0,
    ),
    "rate_limit_per_second": Setting(
        "most requests a second to this destination (shared by syncs in one process)",
        "number",
        None,
        minimum=0.001,
    ),
}


def _setting_problem(key: str, value: Any, setting: Setting) -> str | None:
    where = f"'destination.{key}'"
    if setting.kind == "env":
        if not is_env_var_name(value):
            return (
                f"{where} is {value!r}: give the NAME of the environment variable that holds "
                f"the secret (e.g. {key.removesuffix('_env').upper()}), never the secret itself"
            )
        return None
    if setting.kind == "str":
        if not isinstance(value, str) or not value.strip():
            return f"{where} is {value!r}: give {setting.description} as a string"
        return None
    if setting.kind == "bool":
        return None if isinstance(value, bool) else f"{where} is {value!r}: use true or false"
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if setting.kind == "int" and not is_int:
        return f"{where} is {value!r}: give a whole number ({setting.description})"
    if setting.kind == "number" and not (is_int or isinstance(value, float)):
        return f"{where} is {value!r}: give a number ({setting.description})"
    if setting.minimum is not None and value < setting.minimum:
        return f"{where} is {value!r}: it must be at least {setting.minimum:g}"
    if setting.maximum is not None and value > setting.maximum:
        return f"{where} is {value!r}: it must be at most {setting.maximum:g}"
    return None


# --------------------------------------------------------------------------- destination


class Destination(ABC):
    """Base class of all destinations.

    Subclasses are registered by type name in ``reverse_etl.destinations.DESTINATIONS``
    and constructed as ``cls(settings, context)`` where ``settings`` is the destination
    mapping of ``syncs.yml`` without ``type`` (validated by ``validate_settings``).
    """

    #: Modes this destination supports (see ``MODE_OPERATIONS``).
    modes: ClassVar[tuple[str, ...]] = ()
    #: Default and largest number of operations per batch (``destination.batch_size``).
    default_batch_size: ClassVar[int] = 10_000
    max_batch_size: ClassVar[int] = 1_000_000
    #: Settings besides ``type``, ``batch_size``: name -> Setting.
    settings_spec: ClassVar[Mapping[str, Setting]] = {}
    #: True when ``write`` only stages data and ``commit`` publishes it (files).
    delivers_on_commit: ClassVar[bool] = False

    def __init__(self, settings: Mapping[str, Any], context: SyncContext) -> None:
        self.context = context
        self.settings = {
            key: settings.get(key, spec.default) for key, spec in self.settings_spec.items()
        }
        self.batch_size: int = settings.get("batch_size", self.default_batch_size)

    @classmethod
    def validate_settings(
        cls, settings: Mapping[str, Any], field_names: Sequence[str], mode: str | None
    ) -> list[str]:
        """Return problems with ``settings`` as ``"<problem>: <fix>"`` strings (none = valid).

        Keys are named as ``'destination.<key>'``. Subclasses extend this (call super()).
        """
        problems = []
        spec = {
            "batch_size": Setting(
                f"operations per batch (default {cls.default_batch_size})",
                "int",
                minimum=1,
                maximum=cls.max_batch_size,
            ),
            **cls.settings_spec,
        }
        allowed = ", ".join(["type", *spec])
        for key, value in settings.items():
            if key not in spec:
                hint = ""
                if f"{key}_env" in spec:
                    hint = f"secrets are read from the environment: use '{key}_env: VAR_NAME'; "
                problems.append(
                    f"'destination.{key}' is not a setting of this destination type: "
                    f"{hint}remove it (allowed: {allowed})"
                )
            elif value is None:
                continue  # null means the default; a missing required setting is reported below
            else:
                problem = _setting_problem(key, value, spec[key])
                if problem:
                    problems.append(problem)
        for key, setting in spec.items():
            if setting.required and settings.get(key) in (None, ""):
                problems.append(f"'destination.{key}' is missing: set it to {setting.description}")
        return problems

    def secret(self, setting: str) -> Secret:
        """The secret whose environment variable the setting names; raises if it is unset."""
        env_var = self.settings[setting]
        value = os.environ.get(env_var)
        if not value:
            raise DestinationError(
                f"environment variable {env_var} is not set (named by 'destination.{setting}' "
                f"of sync {self.context.sync_name!r} in syncs.yml): export it before running "
                "the sync, or set 'enabled: false' on the sync"
            )
        return Secret(env_var, value)

    @property
    def output(self) -> str | None:
        """Where this run's data went (file path, table, URL without secrets), for logs."""
        return None

    @abstractmethod
    def check_connection(self) -> None:
        """Raise ``DestinationError`` with a clear message if the destination is unusable."""

    @abstractmethod
    def write(self, batch: Batch) -> list[RowResult]:
        """Apply a batch; return the rows that failed; raise on a whole-batch failure."""

    def prepare(self) -> str | None:
        """``delivers_on_commit`` destinations: make staged data durable, return a token."""
        return None

    @classmethod
    def commit(cls, token: str) -> None:
        """Publish what ``prepare`` staged. Idempotent: may run again after a crash."""
        return None

    def close(self) -> None:
        """Release connections and discard anything staged but not prepared."""
        return None
