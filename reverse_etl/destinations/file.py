"""File destination: one JSONL, CSV or Parquet file of operations per run.

The file is ``<path>/<sync_name>-<YYYYmmddTHHMMSS.ffffffZ>-<run_id[:8]>.<jsonl|csv|parquet>``
(names sort in run order). It is written under a ``.tmp`` name; ``prepare()`` flushes it
to disk (and converts it to Parquet), the engine records the delivery, then ``commit()``
renames it into place. A reader never sees a partial file, a crash never leaves a
delivered run without its file (the next run finishes the rename) and never publishes a
run's file twice. A run with nothing to send writes no file.

JSONL: one ``{"op":"upsert"|"insert"|"delete","key":"...","fields":{...}}`` per line;
``fields`` is the engine's canonical JSON (decimals as numbers, ISO 8601 timestamps, NaN
as null). CSV: columns ``op``, ``key``, then the mapped fields (for deletes: the last
values delivered, blank when unknown); decimals keep their digits, NULL blank, booleans
true/false, lists/objects as JSON. Parquet: ``op``, ``key``, then one typed column per
field (the model column's type).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from json.encoder import encode_basestring as _quote  # JSON string literal, C speed
from pathlib import Path
from typing import IO, Any, ClassVar

import duckdb

from reverse_etl.destinations.base import (
    Batch,
    Destination,
    DestinationError,
    RowResult,
    Setting,
    StagedDataLost,
    SyncContext,
    to_json,
)

FORMATS = ("jsonl", "csv", "parquet")
_RESERVED = ("op", "key")


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else ""  # exact digits, e.g. 1200.50
    return to_json(value)  # lists and objects


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class FileDestination(Destination):
    modes = ("mirror", "upsert", "insert")
    settings_spec: ClassVar[Mapping[str, Setting]] = {
        "format": Setting("jsonl, csv or parquet (default jsonl)", default="jsonl"),
        "path": Setting(
            "the folder to write files into (relative: to the warehouse file's folder)",
            required=True,
        ),
    }
    delivers_on_commit = True

    @classmethod
    def validate_settings(
        cls, settings: Mapping[str, Any], field_names: Sequence[str], mode: str | None
    ) -> list[str]:
        problems = super().validate_settings(settings, field_names, mode)
        fmt = settings.get("format") or "jsonl"
        if fmt not in FORMATS:
            problems.append(f"'destination.format' is {fmt!r}: use one of {', '.join(FORMATS)}")
        elif fmt != "jsonl":
            for name in field_names:
                if name in _RESERVED:
                    problems.append(
                        f"field {name!r} clashes with the {fmt.upper()} column {name!r}: "
                        f"rename the destination field (e.g. record_{name}: ...)"
                    )
        return problems

    def __init__(self, settings: Mapping[str, Any], context: SyncContext) -> None:
        super().__init__(settings, context)
        self.format: str = self.settings["format"] or "jsonl"
        folder = Path(self.settings["path"]).expanduser()
        self.folder = folder if folder.is_absolute() else context.base_dir / folder
        stamp = context.started_at.strftime("%Y%m%dT%H%M%S.%fZ")
        name = f"{context.sync_name}-{stamp}-{context.run_id[:8]}.{self.format}"
        self.path = self.folder / name
        self.tmp_path = self.folder / f"{name}.tmp"
        # Parquet is written by DuckDB from a JSONL staging file at prepare()
        parquet = self.format == "parquet"
        self.staging_path = self.folder / f"{name}.jsonl.tmp" if parquet else self.tmp_path
        self._file: IO[str] | None = None
        self._csv: Any = None
        self._csv_names: tuple[str, ...] = ()
        self._prepared = False

    @property
    def output(self) -> str | None:
        return str(self.path) if self._prepared else None

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
        self._remove_abandoned_files()

    def _remove_abandoned_files(self) -> None:
        """Staging files of this sync left by a run that crashed before it prepared them.

        (Prepared ones were published by the engine's recovery before this run started.)
        """
        pattern = re.compile(
            re.escape(self.context.sync_name)
            + r"-\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}\.(jsonl|csv|parquet)(\.jsonl)?\.tmp"
        )
        for path in self.folder.iterdir():
            if pattern.fullmatch(path.name):
                path.unlink(missing_ok=True)

    def _open(self) -> IO[str]:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle = open(self.staging_path, "w", encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as exc:
            raise DestinationError(
                f"file destination: cannot write {self.staging_path}: {exc}"
            ) from exc
        if self.format == "csv":
            self._csv = csv.writer(handle)
        return handle

    def write(self, batch: Batch) -> list[RowResult]:
        if not batch.operations:
            return []
        if self._file is None:
            self._file = self._open()
        if self.format == "csv" and not self._csv_names:
            # the mapped fields; without them (hand-built runs), the first row's fields
            self._csv_names = self.context.field_names or tuple(batch.operations[0].fields)
            self._csv.writerow(["op", "key", *self._csv_names])
        try:
            if self.format == "csv":
                names = self._csv_names
                rows = []
                for op in batch:
                    fields = op.fields
                    rows.append([op.op, op.key, *(_csv_cell(fields.get(n)) for n in names)])
                self._csv.writerows(rows)
            else:  # jsonl, and the staging file of parquet
                self._file.write(
                    "".join(
                        f'{{"op":{_quote(op.op)},"key":{_quote(op.key)},'
                        f'"fields":{op.fields_json}}}\n'
                        for op in batch
                    )
                )
        except OSError as exc:
            raise DestinationError(
                f"file destination: cannot write {self.staging_path}: {exc}"
            ) from exc
        return []

    def prepare(self) -> str | None:
        handle, self._file = self._file, None
        if handle is None:
            return None  # nothing was written: no file for this run
        try:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            if self.format == "parquet":
                self._convert_to_parquet()
                self.staging_path.unlink()
            _fsync_folder(self.folder)
        except (OSError, duckdb.Error) as exc:
            handle.close()
            raise DestinationError(
                f"file destination: cannot finish {self.tmp_path}: {exc}"
            ) from exc
        self._prepared = True
        return json.dumps({"staged": str(self.tmp_path), "final": str(self.path)})

    def _convert_to_parquet(self) -> None:
        types = {
            name: self.context.field_types.get(name, "JSON") for name in self.context.field_names
        }
        structure = json.dumps(types).replace("'", "''")
        staged = str(self.staging_path).replace("'", "''")
        target = str(self.tmp_path).replace("'", "''")
        unnest = f", unnest(json_transform(fields, '{structure}'))" if types else ""
        with duckdb.connect() as con:
            con.execute(
                f"COPY (SELECT op, key{unnest} FROM read_json('{staged}',"
                " format = 'newline_delimited',"
                " columns = {op: 'VARCHAR', key: 'VARCHAR', fields: 'JSON'}))"
                f" TO '{target}' (FORMAT parquet)"
            )
        with open(self.tmp_path, "rb") as handle:
            os.fsync(handle.fileno())

    @classmethod
    def commit(cls, token: str) -> None:
        paths = json.loads(token)
        staged, final = Path(paths["staged"]), Path(paths["final"])
        if staged.exists():
            os.replace(staged, final)
            _fsync_folder(final.parent)
        elif not final.exists():
            raise StagedDataLost(
                f"file destination: the prepared file {staged} is gone and {final} does not "
                "exist (removed before it was published)"
            )

    def close(self) -> None:
        handle, self._file = self._file, None
        if handle is not None:  # not prepared: the run failed, discard the staging file
            handle.close()
            self.staging_path.unlink(missing_ok=True)
