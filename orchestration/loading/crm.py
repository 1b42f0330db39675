"""CRM CSV exports -> ``raw.crm_<kind>``, through a column mapping (see ``mappings``)."""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pandas as pd

from orchestration.loading.batches import BATCH_ROWS, Rejects, insert_frame
from orchestration.loading.files import UnreadableFile, binary_hint, shown
from orchestration.loading.mappings import CrmMappings, HeaderMatch
from orchestration.loading.schema import CRM_COLUMNS, CRM_TIMESTAMP_COLUMNS, RAW_TABLES

_CHUNK = 1 << 20
_SNIFF_BYTES = 1 << 16
_US_FORMATS = ("%m/%d/%Y", "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S")
_CONTROL = tuple(chr(c) for c in (*range(0, 9), 11, 12, *range(14, 32)))


def parse_timestamp(text: str) -> datetime | None:
    """Parse a CRM export timestamp, or None if it is not one.

    Accepts ``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM[:SS[.f]]``, ISO 8601 with ``T``, ``Z`` or an
    offset, and ``MM/DD/YYYY[ HH:MM[:SS]]`` (the formats dbt staging parses).
    """
    text = text.strip()
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    if "/" in text:
        for fmt in _US_FORMATS:
            try:
                return datetime.strptime(text, fmt)
            except ValueError:
                continue
    return None


def load_crm(
    con: duckdb.DuckDBPyConnection, path: Path, kind: str, mappings: CrmMappings
) -> tuple[int, int, int, str]:
    """Load one CRM export; returns (rows read, loaded, rejected, mapping name)."""
    if mappings.error:
        raise UnreadableFile(f"{path} not loaded: {mappings.error}")
    encoding, head = _csv_encoding(path)
    hint = binary_hint(head, "CSV")
    if hint is not None:
        raise UnreadableFile(f"{path} is not a CSV file (binary content at its start); {hint}")
    records = _csv_records(path, encoding)
    try:
        return _load_records(con, path, kind, mappings, records)
    finally:
        records.close()


def _csv_encoding(path: Path) -> tuple[str, bytes]:
    """("utf-8-sig" if the whole file is valid UTF-8 else "latin-1", its first bytes)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    head = b""
    encoding = "utf-8-sig"  # strips a BOM
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            head = head or chunk[:_SNIFF_BYTES]
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                return "latin-1", head
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return "latin-1", head
    return encoding, head


def _csv_records(path: Path, encoding: str) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """(first physical line, fields, error) for every CSV record; header included.

    The reader's ``line_num`` is the physical line where a record ends, so a record starts
    one line after the previous one ended (quoted fields may span lines).
    """
    with open(path, encoding=encoding, newline="") as fh:
        reader = csv.reader(fh)
        ended = 0
        while True:
            start = ended + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # e.g. a field over the csv module's size limit
                ended = reader.line_num
                yield start, None, f"malformed CSV record: {exc}"
                continue
            ended = reader.line_num
            yield start, fields, None


def _is_blank(fields: list[str]) -> bool:
    # An empty or whitespace-only physical line is not a record (it is not counted as read).
    return not fields or (len(fields) == 1 and not fields[0].strip())


def _csv_text(fields: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue()


def _read_header(
    path: Path, kind: str, mappings: CrmMappings, records: Iterator
) -> tuple[list[str], HeaderMatch] | None:
    for line, fields, error in records:
        if fields is None:
            raise UnreadableFile(
                f"{path}: the header (line {line}) cannot be parsed as CSV ({error}); "
                "replace it with a CSV export or move it out of the landing directory"
            )
        if _is_blank(fields):
            continue
        header = [h.strip() for h in fields]
        # a UTF-8 byte order mark read as Latin-1 (the file also holds non-UTF-8 bytes)
        header[0] = header[0].removeprefix("\xef\xbb\xbf").strip()
        if any(c in h for h in header for c in _CONTROL):
            raise UnreadableFile(
                f"{path} is not a CSV file (control characters in its header line); replace "
                "it with a CSV export or move it out of the landing directory"
            )
        match = mappings.match(kind, header)
        if match is None:
            accepted = ", ".join(repr(h) for h in mappings.record_id_headers(kind))
            found = ", ".join(repr(shown(h)) for h in header[:8])
            raise UnreadableFile(
                f"{path} has no record id column (header: {found}"
                f"{', ...' if len(header) > 8 else ''}); expected one of {accepted} (ignoring "
                f"case and punctuation). Export the {kind} with their id column, or name "
                f"yours in crm/mapping.yml ({kind}: {{record_id: YOUR HEADER}})"
            )
        return header, match
    return None  # empty file, or nothing but blank lines: 0 rows


def _load_records(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    kind: str,
    mappings: CrmMappings,
    records: Iterator[tuple[int, list[str] | None, str | None]],
) -> tuple[int, int, int, str]:
    found = _read_header(path, kind, mappings, records)
    if found is None:
        return 0, 0, 0, ""
    header, match = found
    columns = ("record_id", *CRM_COLUMNS[kind])
    mapped = [(column, match.column_at[column]) for column in columns if column in match.column_at]
    column_list = ", ".join(f'"{column}"' for column, _at in mapped)
    insert_sql = (
        f"INSERT INTO {RAW_TABLES[kind]} ({column_list}, attributes, _source_file, "
        f"_source_line, _loaded_at) SELECT {column_list}, attributes, ?, _source_line, now() "
        "FROM _cdp_batch"
    )
    width = len(header)
    id_at = match.column_at["record_id"]
    dates = [(header[at], at) for column, at in mapped if column in CRM_TIMESTAMP_COLUMNS]
    rejects = Rejects(con, str(path), kind)
    batch: list[tuple[int, list[str]]] = []
    read = loaded = 0
    valid_dates: set[str] = set()

    def flush() -> None:
        if not batch:
            return
        frame: dict[str, Any] = {
            column: pd.Series([row[at] or None for _line, row in batch], dtype=object)
            for column, at in mapped
        }
        frame["attributes"] = pd.Series(
            [_attributes(row, match.attributes_at) for _line, row in batch], dtype=object
        )
        frame["_source_line"] = pd.array([line for line, _row in batch], dtype="int64")
        insert_frame(con, insert_sql, frame, [str(path)])
        batch.clear()

    for line, fields, error in records:
        if fields is None:
            read += 1
            rejects.add(line, error or "malformed CSV record", None)
            continue
        if _is_blank(fields):
            continue
        read += 1
        reason = None
        if len(fields) != width:
            reason = f"expected {width} fields, found {len(fields)}"
        elif not fields[id_at].strip():
            reason = f"missing required field '{header[id_at]}'"
        else:
            for name, at in dates:
                value = fields[at]
                if value in valid_dates or not value.strip():
                    continue
                if parse_timestamp(value) is None:
                    reason = f"unparseable timestamp in '{name}': '{shown(value)}'"
                    break
                if len(valid_dates) >= BATCH_ROWS:  # a cache: keep memory bounded
                    valid_dates.clear()
                valid_dates.add(value)
        if reason is not None:
            rejects.add(line, reason, _csv_text(fields))
            continue
        batch.append((line, fields))
        loaded += 1
        if len(batch) >= BATCH_ROWS:
            flush()
    flush()
    rejects.flush()
    return read, loaded, rejects.count, match.mapping


def _attributes(row: list[str], attributes_at: list[tuple[str, int]]) -> str | None:
    """The row's unmapped, non-empty values as a JSON object (None when there are none)."""
    values = {key: row[at] for key, at in attributes_at if row[at]}
    return orjson.dumps(values).decode() if values else None
