"""File destination: one JSONL or CSV file of operations per run.

The file is ``<path>/<sync_name>-<YYYYmmddTHHMMSSZ>-<run_id[:8]>.<jsonl|csv>``. It is
written under a ``.tmp`` name and renamed on ``close(True)``, so a reader never sees a
partial file; ``close(False)`` removes it. A run with nothing to send writes no file.

JSONL: one ``{"op":"upsert"|"delete","key":"...","fields":{...}}`` per line; ``fields``
is the engine's canonical JSON (``Operation.fields_json``: decimals as numbers, ISO 8601
timestamps, NaN as null) when present, else ``fields`` encoded with ``json_default``.
CSV: columns ``op``, ``key``, then the mapped destination fields (for deletes: the last
values delivered, blank when unknown); decimals keep their digits, dates/timestamps ISO
8601, NULL/NaN blank, booleans true/false, lists/objects as JSON.
"""

from __future__ import annotations

import base64
import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from json.encoder import encode_basestring as _quote  # JSON string literal, C speed
from pathlib import Path
from typing import IO, Any, ClassVar

from reverse_etl.destinations.base import (
    Destination,
    DestinationError,
    Operation,
    RowResult,
    SyncContext,
)

FORMATS = ("jsonl", "csv")
_CSV_RESERVED = ("op", "key")


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


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    if isinstance(value, dict | list | tuple):
        return to_json(value)
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else ""  # exact digits, e.g. 1200.50
    cell = json_default(value)
    return "" if cell is None else cell


class FileDestination(Destination):
    settings_keys: ClassVar[Mapping[str, str]] = {
        "format": "jsonl or csv (default jsonl)",
        "path": "the folder to write files into (relative: to the warehouse file's folder)",
    }
    required_settings = ("path",)

    @classmethod
    def validate_settings(
        cls, settings: Mapping[str, Any], field_names: Sequence[str]
    ) -> list[str]:
        problems = super().validate_settings(settings, field_names)
        fmt = settings.get("format", "jsonl")
        if fmt not in FORMATS:
            problems.append(f"'destination.format' is {fmt!r}: use one of {', '.join(FORMATS)}")
        path = settings.get("path")
        if path not in (None, "") and not isinstance(path, str):
            problems.append(f"'destination.path' is {path!r}: give a folder path as a string")
        if fmt == "csv":
            for name in field_names:
                if name in _CSV_RESERVED:
                    problems.append(
                        f"field {name!r} clashes with the CSV column {name!r}: "
                        f"rename the destination field (e.g. record_{name}: ...)"
                    )
        return problems

    def __init__(self, settings: Mapping[str, Any], context: SyncContext) -> None:
        super().__init__(settings, context)
        self.format: str = settings.get("format", "jsonl")
        folder = Path(settings["path"]).expanduser()
        self.folder = folder if folder.is_absolute() else context.base_dir / folder
        stamp = context.started_at.strftime("%Y%m%dT%H%M%SZ")
        name = f"{context.sync_name}-{stamp}-{context.run_id[:8]}.{self.format}"
        self.path = self.folder / name
        self.tmp_path = self.folder / f"{name}.tmp"
        self._file: IO[str] | None = None
        self._csv: Any = None
        self._csv_names: tuple[str, ...] = ()
        self._committed = False

    @property
    def output(self) -> str | None:
        return str(self.path) if self._committed else None

    def check_connection(self) -> None:
        if self.folder.exists() and not self.folder.is_dir():
            raise DestinationError(
                f"file destination: {self.folder} exists and is not a folder: "
                "point 'destination.path' at a folder"
            )
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DestinationError(
                f"file destination: cannot create folder {self.folder}: {exc.strerror or exc}"
            ) from exc
        if not os.access(self.folder, os.W_OK | os.X_OK):
            raise DestinationError(
                f"file destination: folder {self.folder} is not writable: fix its permissions "
                "or choose another 'destination.path'"
            )

    def _open(self, first: Operation) -> IO[str]:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle = open(self.tmp_path, "w", encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as exc:
            raise DestinationError(
                f"file destination: cannot write {self.tmp_path}: {exc}"
            ) from exc
        if self.format == "csv":
            # the mapped fields; without them (hand-built runs), the first row's fields
            self._csv_names = self.context.field_names or tuple(first.fields)
            self._csv = csv.writer(handle)
            self._csv.writerow(["op", "key", *self._csv_names])
        return handle

    def write(self, batch: Sequence[Operation]) -> list[RowResult]:
        if not batch:
            return []
        if self._file is None:
            self._file = self._open(batch[0])
        failures: list[RowResult] = []
        try:
            if self.format == "jsonl":
                lines = []
                for op in batch:
                    if op.fields_json is not None:  # canonical JSON from DuckDB: use verbatim
                        lines.append(
                            f'{{"op":{_quote(op.op)},"key":{_quote(op.key)},'
                            f'"fields":{op.fields_json}}}'
                        )
                        continue
                    try:
                        lines.append(to_json({"op": op.op, "key": op.key, "fields": op.fields}))
                    except (TypeError, ValueError, RecursionError) as exc:
                        failures.append(RowResult(op.key, False, f"cannot serialize row: {exc}"))
                if lines:
                    self._file.write("\n".join(lines))
                    self._file.write("\n")
            else:
                names = self._csv_names
                rows = []
                for op in batch:
                    fields = op.fields
                    try:
                        rows.append(
                            [op.op, op.key, *(_csv_cell(fields.get(name)) for name in names)]
                        )
                    except (TypeError, ValueError, RecursionError) as exc:
                        failures.append(RowResult(op.key, False, f"cannot serialize row: {exc}"))
                self._csv.writerows(rows)
        except OSError as exc:
            raise DestinationError(
                f"file destination: cannot write {self.tmp_path}: {exc}"
            ) from exc
        return failures

    def close(self, success: bool) -> None:
        handle, self._file = self._file, None
        if handle is None:
            return
        if not success:
            handle.close()
            self.tmp_path.unlink(missing_ok=True)
            return
        try:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            os.replace(self.tmp_path, self.path)
        except OSError as exc:
            handle.close()
            self.tmp_path.unlink(missing_ok=True)
            raise DestinationError(f"file destination: cannot finish {self.path}: {exc}") from exc
        self._committed = True
