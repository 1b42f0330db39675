"""The one interface every destination implements.

The engine builds one ``Destination`` per run, calls ``check_connection()``, then
``write()`` with batches of at most ``batch_size`` operations, then ``close(True)`` to
commit (or ``close(False)`` to discard after a failure). Only after ``close(True)``
returns does the engine record what was delivered in ``reverse_etl.sync_state``.

Delivery is therefore at-least-once: if the process dies between ``close(True)`` and the
state commit, the same operations are sent again by the next run. Destinations should
apply operations idempotently (upsert by key, delete by key).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar


class DestinationError(RuntimeError):
    """The destination cannot be used, or a whole batch failed (the run is aborted)."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One change to apply at the destination.

    ``op`` is ``"upsert"`` (row added or changed; ``fields`` holds the current values, as
    Python values from DuckDB: ``Decimal``, ``date``, ``datetime``, ...) or ``"delete"``
    (row gone from the model; ``fields`` holds the last values delivered, decoded from
    the JSON kept in ``sync_state`` with non-integer numbers as ``Decimal``; they may use
    an older field mapping). ``key`` is the primary key cast to VARCHAR.

    ``fields_json`` is the same fields as canonical JSON text rendered by DuckDB (decimals
    as numbers, ISO 8601 timestamps, no NaN): the bytes that were hashed and are kept in
    ``sync_state``. JSON destinations may send it verbatim instead of re-encoding
    ``fields``; it is None for operations built by hand.
    """

    op: str
    key: str
    fields: dict[str, Any]
    fields_json: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class RowResult:
    """Outcome of one operation. ``ok=False`` rows are not recorded and are retried."""

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
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class Destination(ABC):
    """Base class of all destinations.

    Subclasses are registered by type name in ``reverse_etl.destinations.DESTINATIONS``
    and constructed as ``cls(settings, context)`` where ``settings`` is the destination
    mapping of ``syncs.yml`` without ``type`` (already validated by
    ``validate_settings``).

    ``write`` returns ``RowResult``s: either one per operation, or only the failures
    (``ok=False``); operations without a failed result count as delivered. A failure of
    the whole batch (connection lost, auth error, ...) raises ``DestinationError``.
    """

    batch_size: int = 10_000
    #: Allowed settings (besides ``type``): name -> short description, used in messages.
    settings_keys: ClassVar[Mapping[str, str]] = {}
    #: Settings that must be present.
    required_settings: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: Mapping[str, Any], context: SyncContext) -> None:
        self.settings = dict(settings)
        self.context = context

    @classmethod
    def validate_settings(
        cls, settings: Mapping[str, Any], field_names: Sequence[str]
    ) -> list[str]:
        """Return problems with ``settings`` as ``"<problem>: <fix>"`` strings (none = valid).

        Keys are named as ``'destination.<key>'``. Subclasses extend this (call super()).
        """
        problems = []
        allowed = ", ".join(["type", *cls.settings_keys])
        for key in settings:
            if key not in cls.settings_keys:
                problems.append(
                    f"'destination.{key}' is not a setting of this destination type: "
                    f"remove it (allowed: {allowed})"
                )
        for key in cls.required_settings:
            if key not in settings or settings[key] in (None, ""):
                problems.append(
                    f"'destination.{key}' is missing: set it to {cls.settings_keys[key]}"
                )
        return problems

    @property
    def output(self) -> str | None:
        """Where this run's data went (file path, table, URL), for logs; None if nowhere."""
        return None

    @abstractmethod
    def check_connection(self) -> None:
        """Raise ``DestinationError`` with a clear message if the destination is unusable."""

    @abstractmethod
    def write(self, batch: Sequence[Operation]) -> list[RowResult]:
        """Apply a batch; return failed rows (or one result per row); raise on total failure."""

    def close(self, success: bool) -> None:
        """Finalize: commit what was written (``success=True``) or discard it.

        Destinations that write nothing until the end (files) override this; the default
        has nothing to finalize.
        """
        return None
