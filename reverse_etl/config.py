"""Load and validate ``syncs.yml``.

Every problem is reported as ``<file>: syncs[<i>] (<name>): <what is wrong>: <how to fix>``;
all problems of a file are collected and raised together as one ``ConfigError``.

A sync::

    - name: high_value_customers_crm      # unique; used in state, file names, asset keys
      model: segments.high_value_customers
      primary_key: customer_id
      mode: upsert                        # upsert | update | insert | mirror | audience
      consent: has_email_consent          # optional: a BOOLEAN model column, or 'not <col>'
      schedule: "*/30 * * * *"            # optional: own cron schedule instead of the pipeline
      enabled: true                       # optional: false = declared, never run
      destination: {type: ..., ...}       # secrets only as environment variable names (*_env)
      fields: {destination_field: model_column, ...}
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SYNC_KEYS = (
    "name",
    "model",
    "primary_key",
    "mode",
    "consent",
    "schedule",
    "enabled",
    "destination",
    "fields",
)
TOP_LEVEL_KEYS = ("syncs",)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_MODEL_RE = re.compile(r"^[^\s.]+(\.[^\s.]+)?$")
_CONSENT_RE = re.compile(r"^(not\s+)?([A-Za-z_][A-Za-z0-9_]*)$", re.IGNORECASE)
_CRON_FIELD_RE = re.compile(r"^[0-9A-Za-z*/,?-]+$")
_CRON_ALIASES = ("@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight")


class ConfigError(ValueError):
    """``syncs.yml`` is invalid. ``errors`` lists every problem found (one line each)."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True)
class DestinationConfig:
    type: str
    settings: dict[str, Any]  # the destination mapping without ``type``


@dataclass(frozen=True)
class Consent:
    """Rows are sent only where the BOOLEAN model ``column`` is true (false when ``negated``);
    NULL never counts as consent. Rows failing it are treated as not in the model."""

    column: str
    negated: bool = False

    def __str__(self) -> str:
        return f"not {self.column}" if self.negated else self.column


@dataclass(frozen=True)
class SyncConfig:
    name: str
    model: str  # ``table`` or ``schema.table``
    primary_key: str  # model column
    destination: DestinationConfig
    fields: dict[str, str]  # destination field -> model column, in file order
    mode: str = "mirror"  # see reverse_etl.destinations.base.MODE_OPERATIONS
    consent: Consent | None = None
    schedule: str | None = None  # cron: runs on its own schedule, not in the pipeline job
    enabled: bool = True

    @property
    def key_field(self) -> str:
        """The destination field that carries the primary key."""
        pk = self.primary_key.lower()
        return next(f for f, col in self.fields.items() if col.lower() == pk)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:
            continue  # unhashable key: let the default constructor report it
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first at line {seen[key].start_mark.line + 1}): "
                "keep only one",
                key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _unknown_key(key: Any, allowed: tuple[str, ...]) -> str:
    hint = difflib.get_close_matches(str(key), allowed, n=1)
    did_you_mean = f"did you mean {hint[0]!r}? " if hint else ""
    return f"unknown key {key!r}: {did_you_mean}allowed keys are {', '.join(allowed)}"


def load_syncs(path: Path | str) -> list[SyncConfig]:
    """Read ``path`` and return its syncs, or raise ``ConfigError`` listing every problem."""
    path = Path(path)
    where = _display(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [f"{where}: file not found: create it with a 'syncs:' list (see reverse_etl/syncs.yml)"]
        ) from None
    except OSError as exc:
        raise ConfigError([f"{where}: cannot read the file: {exc}"]) from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}: {at}invalid YAML: {problem}"]) from None

    if not isinstance(data, dict) or "syncs" not in data:
        raise ConfigError(
            [f"{where}: 'syncs' is missing: the file must be a mapping with a 'syncs:' list"]
        )
    errors = [f"{where}: {_unknown_key(k, TOP_LEVEL_KEYS)}" for k in data if k != "syncs"]
    raw_syncs = data["syncs"]
    if raw_syncs is None:
        raw_syncs = []
    if not isinstance(raw_syncs, list):
        raise ConfigError(
            [*errors, f"{where}: 'syncs' must be a list of syncs (each item starting with '- ')"]
        )

    syncs: list[SyncConfig] = []
    first_index: dict[str, int] = {}
    for index, raw in enumerate(raw_syncs):
        sync, problems = _parse_sync(raw, index)
        label = f"syncs[{index}]"
        if isinstance(raw, dict) and isinstance(raw.get("name"), str) and raw["name"]:
            label += f" ({raw['name']})"
            name = raw["name"]
            if name in first_index:
                problems.append(
                    f"'name' {name!r} is already used by syncs[{first_index[name]}]: "
                    "sync names must be unique, rename one"
                )
            else:
                first_index[name] = index
        errors.extend(f"{where}: {label}: {problem}" for problem in problems)
        if sync is not None and not problems:
            syncs.append(sync)
    if errors:
        raise ConfigError(errors)
    return syncs


def _parse_sync(raw: Any, index: int) -> tuple[SyncConfig | None, list[str]]:
    if not isinstance(raw, dict):
        return None, [f"must be a mapping with the keys {', '.join(SYNC_KEYS)}"]
    problems = [_unknown_key(k, SYNC_KEYS) for k in raw if k not in SYNC_KEYS]

    name = raw.get("name")
    if name is None:
        problems.append("'name' is missing: give the sync a unique name (letters, digits, _ or -)")
    elif not isinstance(name, str) or not _NAME_RE.match(name):
        problems.append(
            f"'name' {name!r} is not valid: use letters, digits, '_' or '-' "
            "(it is used in state and file names)"
        )

    model = raw.get("model")
    if model is None:
        problems.append(
            "'model' is missing: name the dbt model (table) to sync, "
            "e.g. high_value_customers or segments.high_value_customers"
        )
    elif not isinstance(model, str) or not _MODEL_RE.match(model):
        problems.append(
            f"'model' {model!r} is not valid: give a table name or schema.table, "
            "e.g. segments.high_value_customers"
        )

    primary_key = raw.get("primary_key")
    if primary_key is None:
        problems.append("'primary_key' is missing: name the model column that identifies a row")
    elif not isinstance(primary_key, str) or not primary_key.strip():
        problems.append(
            f"'primary_key' {primary_key!r} is not valid: give one model column name as a string"
        )
        primary_key = None

    fields, field_problems = _parse_fields(raw.get("fields", ...))
    problems.extend(field_problems)
    if fields and isinstance(primary_key, str):
        columns = {c.lower() for c in fields.values()}
        if primary_key.lower() not in columns:
            problems.append(
                f"'primary_key' column {primary_key!r} is not among the mapped columns "
                f"({', '.join(dict.fromkeys(fields.values()))}): add it to 'fields', "
                f"e.g. '{primary_key}: {primary_key}'"
            )

    mode, mode_problems = _parse_mode(raw.get("mode"), raw.get("destination"))
    problems.extend(mode_problems)
    consent, consent_problems = _parse_consent(raw.get("consent"))
    problems.extend(consent_problems)
    schedule = raw.get("schedule")
    if schedule is not None and not _is_cron(schedule):
        problems.append(
            f"'schedule' {schedule!r} is not a cron expression: write five fields like "
            '"*/30 * * * *" (quoted), or remove it to run the sync after its model in the '
            "pipeline"
        )
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.append(f"'enabled' is {enabled!r}: use true or false")

    destination, destination_problems = _parse_destination(
        raw.get("destination"), tuple(fields or ()), mode
    )
    problems.extend(destination_problems)

    if problems:
        return None, problems
    assert destination is not None
    assert fields is not None
    assert mode is not None
    return (
        SyncConfig(
            name=name,
            model=model,
            primary_key=primary_key,
            destination=destination,
            fields=fields,
            mode=mode,
            consent=consent,
            schedule=schedule,
            enabled=enabled,
        ),
        [],
    )


def _parse_mode(raw: Any, destination: Any) -> tuple[str | None, list[str]]:
    from reverse_etl.destinations import DESTINATIONS  # late: destinations import this module
    from reverse_etl.destinations.base import MODES

    kind = destination.get("type") if isinstance(destination, dict) else None
    cls = DESTINATIONS.get(kind) if isinstance(kind, str) else None
    supported = cls.modes if cls is not None else MODES
    which = f"a {kind} destination supports {', '.join(supported)}" if cls else ""
    if raw is None:
        return None, [
            f"'mode' is missing: choose one of {', '.join(MODES)}"
            + (f" ({which})" if which else "")
            + "; see README, Reverse ETL"
        ]
    if raw not in MODES:
        return None, [f"'mode' {raw!r} is not a mode: use one of {', '.join(MODES)}"]
    if cls is not None and raw not in supported:
        return None, [f"'mode' {raw!r} is not supported here: {which}"]
    return raw, []


def _parse_consent(raw: Any) -> tuple[Consent | None, list[str]]:
    if raw is None:
        return None, []
    match = _CONSENT_RE.match(raw.strip()) if isinstance(raw, str) else None
    if not match:
        return None, [
            f"'consent' {raw!r} is not valid: name a BOOLEAN column of the model that is true "
            "when the person agreed (e.g. 'has_email_opt_in'), or 'not <column>' for a column "
            "that is true when they refused (e.g. 'not is_unsubscribed_from_email')"
        ]
    return Consent(column=match.group(2), negated=bool(match.group(1))), []


def _is_cron(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if value.strip() in _CRON_ALIASES:
        return True
    parts = value.split()
    return len(parts) == 5 and all(_CRON_FIELD_RE.match(part) for part in parts)


def _parse_fields(raw: Any) -> tuple[dict[str, str] | None, list[str]]:
    fix = (
        "map destination fields to model columns ('field: column'), "
        "or list the columns to send under the same names"
    )
    if raw is ...:
        return None, [f"'fields' is missing: {fix}"]
    if raw is None or (isinstance(raw, dict | list) and not raw):
        return None, [f"'fields' is empty: {fix}"]
    problems: list[str] = []
    fields: dict[str, str] = {}
    if isinstance(raw, list):
        for i, column in enumerate(raw):
            if not isinstance(column, str) or not column.strip():
                problems.append(f"'fields[{i}]' is {column!r}: give a model column name (quote it)")
            elif column in fields:
                problems.append(f"'fields[{i}]' {column!r} is listed twice: keep one")
            else:
                fields[column] = column
    elif isinstance(raw, dict):
        for field, column in raw.items():
            if not isinstance(field, str) or not field.strip():
                problems.append(
                    f"'fields' key {field!r} is not a field name: quote it as a string, "
                    f"e.g. '\"{field}\": column'"
                )
            elif not isinstance(column, str) or not column.strip():
                problems.append(
                    f"'fields.{field}' is {column!r}: give the model column to send as {field!r}"
                )
            else:
                fields[field] = column
    else:
        return None, [f"'fields' is {raw!r}: {fix}"]
    return (None if problems else fields), problems


def _parse_destination(raw: Any, field_names: tuple[str, ...], mode: str | None):
    from reverse_etl.destinations import DESTINATIONS  # late: destinations import this module

    types = ", ".join(DESTINATIONS)
    if raw is None:
        return None, [f"'destination' is missing: add a destination with a 'type' ({types})"]
    if not isinstance(raw, dict):
        return None, [f"'destination' must be a mapping with a 'type' ({types}) and its settings"]
    kind = raw.get("type")
    if kind is None:
        return None, [f"'destination.type' is missing: set it to one of {types}"]
    if not isinstance(kind, str) or kind not in DESTINATIONS:
        return None, [f"'destination.type' {kind!r} is not supported: use one of {types}"]
    settings = {k: v for k, v in raw.items() if k != "type"}
    problems = DESTINATIONS[kind].validate_settings(settings, field_names, mode)
    if problems:
        return None, problems
    return DestinationConfig(type=kind, settings=settings), []
