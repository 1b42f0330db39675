"""Load the landing directory into the ``raw`` schema (pure Python + DuckDB, no Dagster).

The contract lives in ``docs/architecture.md`` ("Landing directory", "Raw tables"):

* ``crm/contacts*.csv``, ``crm/companies*.csv``, ``crm/deals*.csv``, ``crm/tickets*.csv``
  -> ``raw.crm_<kind>`` (one VARCHAR column per snake-cased header);
* ``events/*.jsonl`` and ``events/*.jsonl.gz`` -> ``raw.events``;
* every other file in ``crm/`` or ``events/`` is reported as ignored.

Every file is loaded in one transaction: its rows, its rejected rows and its
``raw.loaded_files`` row are committed together or not at all. Files are identified by
their absolute path and the sha256 of their bytes as stored (compressed bytes for ``.gz``),
which makes a second run over the same landing directory a no-op. ``load_landing`` opens
and commits those transactions itself, so the connection must not be inside one.

Files are never deleted from the raw tables because they disappeared from the landing
directory; only a changed file's earlier rows are replaced.
"""

from __future__ import annotations

import codecs
import csv
import gc
import gzip
import hashlib
import io
import re
import unicodedata
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

try:  # orjson ships with the Dagster/dbt stack; it is ~3x faster and strict (no NaN).
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only without orjson
    _orjson = None
    import json as _json

FILE_KINDS = ("contacts", "companies", "deals", "tickets", "events")
CRM_KINDS = FILE_KINDS[:4]
RAW_TABLES = {
    "contacts": "raw.crm_contacts",
    "companies": "raw.crm_companies",
    "deals": "raw.crm_deals",
    "tickets": "raw.crm_tickets",
    "events": "raw.events",
}
MESSAGE_TYPES = frozenset({"identify", "track", "page", "screen", "alias", "group"})

BATCH_ROWS = 100_000  # rows buffered in memory before they are inserted (same transaction)
_HASH_CHUNK = 1 << 20
_DATE_HEADER = re.compile(r"\bdate\b", re.IGNORECASE)  # "Create Date", not "Candidate"
_MAX_SHOWN = 80  # longest value quoted in a rejection reason

LAYOUT_HELP = (
    "expected a landing directory containing crm/contacts*.csv, crm/companies*.csv, "
    "crm/deals*.csv, crm/tickets*.csv and events/*.jsonl or events/*.jsonl.gz"
)

_META_DDL = (
    "_source_file VARCHAR NOT NULL, _source_line BIGINT NOT NULL, _loaded_at TIMESTAMPTZ NOT NULL"
)
_EVENT_COLUMNS = (
    "message_id",
    "type",
    "event",
    "name",
    "user_id",
    "anonymous_id",
    "previous_id",
    "group_id",
)
SCHEMA_DDL = (
    "CREATE SCHEMA IF NOT EXISTS raw",
    # CRM tables start with the metadata and record_id; every other header is added as a
    # VARCHAR column (ALTER TABLE ... ADD COLUMN) the first time a file carries it.
    *(
        f"CREATE TABLE IF NOT EXISTS {RAW_TABLES[kind]} ({_META_DDL}, record_id VARCHAR NOT NULL)"
        for kind in CRM_KINDS
    ),
    (
        "CREATE TABLE IF NOT EXISTS raw.events ("
        "message_id VARCHAR NOT NULL, type VARCHAR NOT NULL, event VARCHAR, name VARCHAR, "
        "user_id VARCHAR, anonymous_id VARCHAR, previous_id VARCHAR, group_id VARCHAR, "
        "event_at TIMESTAMPTZ NOT NULL, received_at TIMESTAMPTZ, "
        f"traits JSON, properties JSON, context JSON, {_META_DDL})"
    ),
    (
        "CREATE TABLE IF NOT EXISTS raw.loaded_files ("
        "file_path VARCHAR NOT NULL, file_kind VARCHAR NOT NULL, content_hash VARCHAR NOT NULL, "
        "rows_read BIGINT NOT NULL, rows_loaded BIGINT NOT NULL, rows_rejected BIGINT NOT NULL, "
        "status VARCHAR NOT NULL, loaded_at TIMESTAMPTZ NOT NULL)"
    ),
    (
        "CREATE TABLE IF NOT EXISTS raw.rejected_rows ("
        "source_file VARCHAR NOT NULL, source_line BIGINT NOT NULL, file_kind VARCHAR NOT NULL, "
        "reason VARCHAR NOT NULL, raw_text VARCHAR, rejected_at TIMESTAMPTZ NOT NULL)"
    ),
)


# --------------------------------------------------------------------------- report


@dataclass
class FileLoad:
    """What happened to one file of the landing directory."""

    path: Path
    kind: str | None
    status: str  # loaded | replaced | unchanged | duplicate | unreadable
    rows_read: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    error: str | None = None
    duplicate_of: Path | None = None  # for status "duplicate": the path loaded with these bytes


@dataclass
class LoadReport:
    files: list[FileLoad] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)
    # message ids that occur more than once in raw.events after this load (all files)
    duplicate_message_ids: int = 0

    @property
    def rows_read(self) -> int:
        return sum(f.rows_read for f in self.files)

    @property
    def rows_loaded(self) -> int:
        return sum(f.rows_loaded for f in self.files)

    @property
    def rows_rejected(self) -> int:
        return sum(f.rows_rejected for f in self.files)

    @property
    def unreadable(self) -> list[FileLoad]:
        return [f for f in self.files if f.status == "unreadable"]

    def by_status(self, status: str) -> list[FileLoad]:
        return [f for f in self.files if f.status == status]

    def by_kind(self) -> dict[str, tuple[int, int]]:
        """kind -> (rows loaded, rows rejected) by this run, for every kind in FILE_KINDS."""
        totals = {kind: (0, 0) for kind in FILE_KINDS}
        for f in self.files:
            if f.kind in totals:
                loaded, rejected = totals[f.kind]
                totals[f.kind] = (loaded + f.rows_loaded, rejected + f.rows_rejected)
        return totals


class UnreadableFile(Exception):
    """The file cannot be read at all; nothing of it is loaded."""


# --------------------------------------------------------------------------- schema


# The CRM columns the dbt staging models read (HubSpot export headers, snake-cased). They
# exist from the start, so that an export without one of them still builds (as NULLs).
STAGED_CRM_COLUMNS = {
    "contacts": (
        "first_name", "last_name", "email", "phone_number", "company_name",
        "associated_company_id", "lifecycle_stage", "lead_status", "create_date",
        "last_activity_date", "unsubscribed_from_all_email", "city", "country_region",
    ),
    "companies": (
        "company_name", "company_domain_name", "industry", "number_of_employees",
        "annual_revenue", "city", "country_region", "create_date",
    ),
    "deals": (
        "deal_name", "deal_stage", "pipeline", "amount", "close_date", "create_date",
        "associated_contact_ids", "associated_company_ids",
    ),
    "tickets": (
        "ticket_name", "ticket_status", "priority", "source", "create_date",
        "associated_contact_ids",
    ),
}  # fmt: skip


def ensure_raw_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create schema ``raw`` and every raw table if missing (idempotent)."""
    for statement in SCHEMA_DDL:
        con.execute(statement)
    for kind, columns in STAGED_CRM_COLUMNS.items():
        for column in columns:
            con.execute(
                f'ALTER TABLE {RAW_TABLES[kind]} ADD COLUMN IF NOT EXISTS "{column}" VARCHAR'
            )


# --------------------------------------------------------------------------- entry point


def load_landing(
    con: duckdb.DuckDBPyConnection,
    landing_dir: Path,
    progress: Callable[[str], None] | None = None,
) -> LoadReport:
    """Load every export of ``landing_dir`` that is new or changed into the raw tables."""
    landing_dir = Path(landing_dir)
    if not landing_dir.is_dir():
        what = "is not a directory" if landing_dir.exists() else "does not exist"
        raise FileNotFoundError(f"landing directory {landing_dir.absolute()} {what}: {LAYOUT_HELP}")
    landing_dir = landing_dir.resolve()
    say = progress or (lambda _line: None)

    ensure_raw_schema(con)
    exports, ignored = discover_landing(landing_dir)
    if (
        not exports
        and not ignored
        and not any((landing_dir / sub).is_dir() for sub in ("crm", "events"))
    ):
        say(f"{landing_dir}: no crm/ or events/ folder, nothing to load ({LAYOUT_HELP})")

    report = LoadReport(ignored=ignored)
    for path, kind in exports:
        result = _load_one(con, path, kind)
        report.files.append(result)
        say(_describe(result, landing_dir))
    for path in ignored:
        say(f"{_rel(path, landing_dir)}: ignored (not a recognised export name)")

    row = con.execute("SELECT count(*) - count(DISTINCT message_id) FROM raw.events").fetchone()
    report.duplicate_message_ids = int(row[0]) if row else 0
    return report


def discover_landing(landing_dir: Path) -> tuple[list[tuple[Path, str]], list[Path]]:
    """(path, kind) of every export in crm/ and events/ (sorted), and the ignored paths.

    Only the two folders are scanned; files at the landing root (truth.csv, README, ...)
    are not exports and are not reported.
    """
    exports: list[tuple[Path, str]] = []
    ignored: list[Path] = []
    for folder in ("crm", "events"):
        directory = landing_dir / folder
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            kind = _kind_of(folder, path.name) if path.is_file() else None
            if kind is None:
                ignored.append(path)
            else:
                exports.append((path, kind))
    return exports, ignored


def landing_files(landing_dir: Path) -> list[Path]:
    """The export files of ``landing_dir`` (sorted; ignored files excluded, none if missing)."""
    exports, _ignored = discover_landing(Path(landing_dir))
    return [path for path, _kind in exports]


def _kind_of(folder: str, name: str) -> str | None:
    if folder == "events":
        return "events" if name.endswith((".jsonl", ".jsonl.gz")) else None
    for kind in CRM_KINDS:
        if fnmatchcase(name, f"{kind}*.csv"):
            return kind
    return None


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _describe(result: FileLoad, root: Path) -> str:
    name = _rel(result.path, root)
    counts = f"{result.rows_loaded:,} loaded, {result.rows_rejected:,} rejected"
    if result.status == "loaded":
        return f"{name}: {counts}"
    if result.status == "replaced":
        return f"{name}: changed, earlier rows replaced: {counts}"
    if result.status == "unchanged":
        return f"{name}: unchanged, skipped"
    if result.status == "duplicate":
        return f"{name}: same content as {_rel(result.duplicate_of, root)}, nothing loaded"
    return f"{name}: UNREADABLE: {result.error}"


# --------------------------------------------------------------------------- one file


def _load_one(con: duckdb.DuckDBPyConnection, path: Path, kind: str) -> FileLoad:
    source = str(path)
    try:
        digest, size = _fingerprint(path)
    except OSError as exc:
        return FileLoad(path, kind, "unreadable", error=_os_error_message(path, exc))

    previous = con.execute(
        "SELECT content_hash, status, file_kind FROM raw.loaded_files WHERE file_path = ?",
        [source],
    ).fetchone()
    # Every empty file has the same hash; an empty export is never a "copy" of another.
    original = None
    if size:
        found = con.execute(
            "SELECT file_path FROM raw.loaded_files WHERE content_hash = ? AND file_path <> ? "
            "AND status IN ('loaded', 'replaced') ORDER BY loaded_at, file_path LIMIT 1",
            [digest, source],
        ).fetchone()
        original = Path(found[0]) if found else None

    if previous is not None and previous[0] == digest:
        # Same bytes as last time. A file recorded as a duplicate is loaded after all once
        # the file it duplicated no longer holds those bytes (its rows would be gone).
        if not (previous[1] == "duplicate" and original is None):
            return FileLoad(path, kind, "unchanged")
        status = "loaded"
    elif original is not None:
        status = "duplicate"
    else:
        status = "replaced" if previous is not None else "loaded"

    con.begin()
    try:
        if previous is not None:
            previous_table = RAW_TABLES.get(previous[2], RAW_TABLES[kind])
            con.execute(f"DELETE FROM {previous_table} WHERE _source_file = ?", [source])
            con.execute("DELETE FROM raw.rejected_rows WHERE source_file = ?", [source])
        result = FileLoad(
            path, kind, status, duplicate_of=original if status == "duplicate" else None
        )
        if status != "duplicate":
            loader = _load_events if kind == "events" else _load_crm
            # The parsers make millions of short-lived, acyclic objects while the batch
            # they keep alive grows; the cyclic GC then rescans the batch over and over
            # (about 40% of the run time). Nothing here creates cycles, so pause it.
            gc_was_enabled = gc.isenabled()
            gc.disable()
            try:
                counts = loader(con, path, kind)
            finally:
                if gc_was_enabled:
                    gc.enable()
            result.rows_read, result.rows_loaded, result.rows_rejected = counts
        con.execute("DELETE FROM raw.loaded_files WHERE file_path = ?", [source])
        con.execute(
            "INSERT INTO raw.loaded_files VALUES (?, ?, ?, ?, ?, ?, ?, now())",
            [
                source,
                kind,
                digest,
                result.rows_read,
                result.rows_loaded,
                result.rows_rejected,
                status,
            ],
        )
        con.commit()
    except UnreadableFile as exc:
        con.rollback()
        return FileLoad(path, kind, "unreadable", error=str(exc))
    except (OSError, EOFError, zlib.error) as exc:
        con.rollback()
        return FileLoad(path, kind, "unreadable", error=_os_error_message(path, exc))
    except BaseException:
        con.rollback()
        raise
    return result


def _fingerprint(path: Path) -> tuple[str, int]:
    """sha256 hex of the file's bytes as stored (streamed) and its size."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _os_error_message(path: Path, exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return (
            f"cannot read {path}: permission denied; give the loader read access to the "
            "file (or move it out of the landing directory) and run the load again"
        )
    if isinstance(exc, (gzip.BadGzipFile, EOFError, zlib.error)) or path.name.endswith(".gz"):
        return (
            f"cannot decompress {path}: {exc or type(exc).__name__} (corrupt or truncated "
            "gzip); copy or export the file again, then run the load again"
        )
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"cannot read {path}: {detail}; check the file and run the load again"


def _open_binary(path: Path) -> io.BufferedIOBase:
    if path.name.endswith(".gz"):
        # The outer buffer makes line iteration C-level (GzipFile.readline is Python).
        return io.BufferedReader(gzip.GzipFile(path, "rb"), _HASH_CHUNK)
    return open(path, "rb", buffering=_HASH_CHUNK)


def _insert_frame(
    con: duckdb.DuckDBPyConnection, sql: str, columns: dict[str, Any], params: list[Any]
) -> None:
    """Run ``sql`` (which selects from ``_cdp_batch``) over ``columns`` as a DataFrame."""
    frame = pd.DataFrame(columns, copy=False)
    con.register("_cdp_batch", frame)
    try:
        con.execute(sql, params)
    finally:
        con.unregister("_cdp_batch")


class _Rejects:
    """Buffers rejected rows of one file and inserts them in batches."""

    def __init__(self, con: duckdb.DuckDBPyConnection, source: str, kind: str) -> None:
        self.con, self.source, self.kind = con, source, kind
        self.lines: list[int] = []
        self.reasons: list[str] = []
        self.texts: list[str | None] = []
        self.count = 0

    def add(self, line: int, reason: str, text: str | None) -> None:
        self.lines.append(line)
        self.reasons.append(reason)
        self.texts.append(text)
        self.count += 1
        if len(self.lines) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.lines:
            return
        _insert_frame(
            self.con,
            "INSERT INTO raw.rejected_rows (source_file, source_line, file_kind, reason, "
            "raw_text, rejected_at) SELECT ?, line, ?, reason, raw_text, now() FROM _cdp_batch",
            {
                "line": pd.array(self.lines, dtype="int64"),
                "reason": pd.Series(self.reasons, dtype=object),
                "raw_text": pd.Series(self.texts, dtype=object),
            },
            [self.source, self.kind],
        )
        self.lines, self.reasons, self.texts = [], [], []


def _shown(value: object) -> str:
    text = str(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


# --------------------------------------------------------------------------- timestamps

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)
_US_FORMATS = ("%m/%d/%Y", "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S")


def parse_timestamp(text: str) -> datetime | None:
    """Parse an export timestamp, or None if it is not one.

    Accepts ``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM[:SS[.f]]``, ISO 8601 with ``T``, ``Z`` or an
    offset, and ``MM/DD/YYYY[ HH:MM[:SS]]``. A timestamp without offset is naive (read as UTC).
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


# --------------------------------------------------------------------------- CSV


def snake_case(header: str) -> str:
    """Column name for a CSV header: lowercase, runs of non-alphanumerics -> ``_``, trimmed.

    Accents are folded first ("Région" -> "region") so that column names stay ASCII.
    """
    folded = unicodedata.normalize("NFKD", header.lower())
    folded = folded.encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^0-9a-z]+", "_", folded).strip("_")


def column_names(headers: list[str]) -> list[str]:
    """Snake-cased, unique column names, in header order (repeats get ``_2``, ``_3``...)."""
    names: list[str] = []
    seen: set[str] = set()
    for position, header in enumerate(headers, start=1):
        base = snake_case(header) or f"column_{position}"
        name, suffix = base, 1
        while name in seen:
            suffix += 1
            name = f"{base}_{suffix}"
        seen.add(name)
        names.append(name)
    return names


def _csv_encoding(path: Path) -> tuple[str, bytes]:
    """("utf-8-sig" if the whole file is valid UTF-8 else "latin-1", its first bytes)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    head = b""
    encoding = "utf-8-sig"  # strips a BOM
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            head = head or chunk[:_SNIFF_BYTES]
            if encoding != "latin-1":
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    encoding = "latin-1"
                    break
    if encoding != "latin-1":
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            encoding = "latin-1"
    return encoding, head


_SNIFF_BYTES = 1 << 16
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _binary_hint(head: bytes, what: str) -> str | None:
    """What to do about a file whose first bytes are not text, or None if they are."""
    if head.startswith(b"\x1f\x8b"):
        if what == "JSON Lines":
            return "it looks gzip-compressed: name it .jsonl.gz"
        return "it looks gzip-compressed: decompress it first"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "it looks UTF-16 encoded: export it again as UTF-8"
    if head.startswith(b"PK\x03\x04"):
        return f"it looks like a zip archive or an Excel workbook: export it as {what}"
    if b"\x00" in head:
        return f"replace it with a {what} export or move it out of the landing directory"
    return None


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


def _load_crm(con: duckdb.DuckDBPyConnection, path: Path, kind: str) -> tuple[int, int, int]:
    encoding, head = _csv_encoding(path)
    hint = _binary_hint(head, "CSV")
    if hint is not None:
        raise UnreadableFile(f"{path} is not a CSV file (binary content at its start); {hint}")
    records = _csv_records(path, encoding)
    try:
        return _load_crm_records(con, path, kind, records)
    finally:
        records.close()


def _load_crm_records(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    kind: str,
    records: Iterator[tuple[int, list[str] | None, str | None]],
) -> tuple[int, int, int]:
    source, table = str(path), RAW_TABLES[kind]

    header: list[str] | None = None
    for line, fields, error in records:
        if fields is None:
            raise UnreadableFile(
                f"{path}: the header (line {line}) cannot be parsed as CSV ({error}); "
                "replace it with a CSV export or move it out of the landing directory"
            )
        if not _is_blank(fields):
            header = [h.strip() for h in fields]
            # a UTF-8 byte order mark read as Latin-1 (the file also holds non-UTF-8 bytes)
            header[0] = header[0].removeprefix("\xef\xbb\xbf").strip()
            break
    if header is None:  # empty file, or nothing but blank lines: 0 rows
        return 0, 0, 0
    if any(_CONTROL_CHARS.search(h) for h in header):
        raise UnreadableFile(
            f"{path} is not a CSV file (control characters in its header line); replace it "
            "with a CSV export or move it out of the landing directory"
        )
    names = column_names(header)
    if "record_id" not in names:
        shown = ", ".join(repr(_shown(h)) for h in header[:8])
        raise UnreadableFile(
            f"{path} has no 'Record ID' column "
            f"(header: {shown}{', ...' if len(header) > 8 else ''}); "
            f"export the {kind} with their Record ID column or move the file out of the "
            "landing directory"
        )

    existing = {
        row[0]
        for row in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'raw' AND table_name = ?",
            [table.split(".", 1)[1]],
        ).fetchall()
    }
    for name in names:
        if name not in existing:
            con.execute(f'ALTER TABLE {table} ADD COLUMN "{name}" VARCHAR')

    width = len(names)
    id_at = names.index("record_id")
    id_header = header[id_at]
    date_at = [i for i, h in enumerate(header) if _DATE_HEADER.search(h)]
    column_list = ", ".join(f'"{n}"' for n in names)
    insert_sql = (
        f"INSERT INTO {table} ({column_list}, _source_file, _source_line, _loaded_at) "
        f"SELECT {column_list}, ?, _source_line, now() FROM _cdp_batch"
    )
    rejects = _Rejects(con, source, kind)
    lines: list[int] = []
    values: list[list[str]] = []
    read = loaded = 0
    valid_dates: set[str] = set()

    def flush() -> None:
        if not lines:
            return
        columns: dict[str, Any] = {
            name: pd.Series([row[i] or None for row in values], dtype=object)
            for i, name in enumerate(names)
        }
        columns["_source_line"] = pd.array(lines, dtype="int64")
        _insert_frame(con, insert_sql, columns, [source])
        lines.clear()
        values.clear()

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
            reason = f"missing required field '{id_header}'"
        else:
            for i in date_at:
                value = fields[i]
                if value in valid_dates or not value.strip():
                    continue
                if parse_timestamp(value) is None:
                    reason = f"unparseable timestamp in '{header[i]}': '{_shown(value)}'"
                    break
                if len(valid_dates) >= BATCH_ROWS:  # a cache: keep memory bounded
                    valid_dates.clear()
                valid_dates.add(value)
        if reason is not None:
            rejects.add(line, reason, _csv_text(fields))
            continue
        lines.append(line)
        values.append(fields)
        loaded += 1
        if len(lines) >= BATCH_ROWS:
            flush()
    flush()
    rejects.flush()
    return read, loaded, rejects.count


# --------------------------------------------------------------------------- JSONL

if _orjson is not None:
    _json_loads = _orjson.loads
    _JSONDecodeError: type[Exception] = _orjson.JSONDecodeError
else:  # pragma: no cover

    def _no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    def _json_loads(text: str) -> Any:
        return _json.loads(text, parse_constant=_no_constant)

    _JSONDecodeError = ValueError

_TRAITS_OWN, _TRAITS_CONTEXT = 1, 2
# DuckDB extracts traits/properties/context from the original line (one JSON parse per
# line, in C++): the stored JSON keeps key order and numbers (even beyond 64 bits) as sent.
_EVENTS_INSERT = (
    "INSERT INTO raw.events (message_id, type, event, name, user_id, anonymous_id, previous_id, "
    "group_id, event_at, received_at, traits, properties, context, _source_file, _source_line, "
    "_loaded_at) "
    "SELECT message_id, type, event, name, user_id, anonymous_id, previous_id, group_id, "
    "timezone('UTC', make_timestamp(event_us)), timezone('UTC', make_timestamp(received_us)), "
    "CASE traits_from WHEN 1 THEN parts[1] WHEN 2 THEN parts[2] END, "
    "CASE WHEN has_properties THEN parts[3] END, "
    "CASE WHEN has_context THEN parts[4] END, "
    "?, _source_line, now() "
    "FROM (SELECT *, json_extract(raw_json, "
    "['$.traits', '$.context.traits', '$.properties', '$.context']) AS parts FROM _cdp_batch)"
)


class _Invalid(Exception):
    """A message fails validation; the argument is the rejection reason."""


def _text(value: object, field_name: str) -> str | None:
    """Slow path of a text field: None/"" -> None, a number -> its string, else invalid."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise _Invalid(f"invalid '{field_name}': expected a string, found {type(value).__name__}")


def _micros(value: object) -> int | None:
    """Microseconds since the epoch (UTC) of a timestamp value, None if unparseable."""
    if value.__class__ is not str:
        return None
    try:
        parsed = _fromisoformat(value)  # fast path: Segment sends ISO 8601
    except ValueError:
        parsed = parse_timestamp(value)
        if parsed is None:
            return None
    if parsed.tzinfo is None:
        return (parsed - _EPOCH_NAIVE) // _MICROSECOND
    return (parsed - _EPOCH) // _MICROSECOND


_fromisoformat = datetime.fromisoformat


def _parse_message(message: Any) -> tuple:
    """Validate one decoded message; the tuple follows ``_BATCH_FIELDS``.

    This runs once per event line, hence the inlined camelCase/snake_case look-ups with a
    fast path for plain strings.
    """
    if message.__class__ is not dict:
        raise _Invalid("not a JSON object")
    get = message.get
    kind = get("type")
    if kind.__class__ is not str or kind not in MESSAGE_TYPES:
        if kind is None or kind == "":
            raise _Invalid("missing required field 'type'")
        normalized = kind.strip().lower() if isinstance(kind, str) else None
        if normalized not in MESSAGE_TYPES:
            raise _Invalid(f"unknown message type '{_shown(kind)}'")
        kind = normalized

    value = get("messageId")
    if value is None:
        value = get("message_id")
    message_id = value if value.__class__ is str and value else _text(value, "messageId")
    if message_id is None:
        raise _Invalid("missing required field 'messageId'")

    # event_at: timestamp, else originalTimestamp, else receivedAt. A value that is present
    # but unparseable is rejected, never skipped in favour of the next one.
    received_raw = get("receivedAt")
    if received_raw is None:
        received_raw = get("received_at")
    received_us = None if received_raw is None or received_raw == "" else _micros(received_raw)
    event_raw = get("timestamp")
    if event_raw is None or event_raw == "":
        event_raw = get("originalTimestamp")
        if event_raw is None:
            event_raw = get("original_timestamp")
        if event_raw is None or event_raw == "":
            event_raw = received_raw
            if event_raw is None or event_raw == "":
                raise _Invalid("missing required field 'timestamp'")
    event_us = received_us if event_raw is received_raw else _micros(event_raw)
    if event_us is None:
        raise _Invalid(f"unparseable timestamp '{_shown(event_raw)}'")
    if received_us is None and received_raw is not None and received_raw != "":
        raise _Invalid(f"unparseable timestamp in 'receivedAt': '{_shown(received_raw)}'")

    value = get("userId")
    if value is None:
        value = get("user_id")
    user_id = value if value.__class__ is str and value else _text(value, "userId")
    value = get("anonymousId")
    if value is None:
        value = get("anonymous_id")
    anonymous_id = value if value.__class__ is str and value else _text(value, "anonymousId")
    if user_id is None and anonymous_id is None:
        raise _Invalid("missing userId and anonymousId")

    value = get("event")
    event = value if value.__class__ is str and value else _text(value, "event")
    if event is None and kind == "track":
        raise _Invalid("track message without 'event'")
    value = get("previousId")
    if value is None:
        value = get("previous_id")
    previous_id = value if value.__class__ is str and value else _text(value, "previousId")
    if kind == "alias":
        if previous_id is None:
            raise _Invalid("alias message without 'previousId'")
        if user_id is None:
            raise _Invalid("alias message without 'userId'")
    value = get("name")
    name = value if value.__class__ is str and value else _text(value, "name")
    value = get("groupId")
    if value is None:
        value = get("group_id")
    group_id = value if value.__class__ is str and value else _text(value, "groupId")

    # traits = traits, or else context.traits (the JSON itself is extracted by DuckDB).
    context = get("context")
    traits_from = None
    if get("traits"):
        traits_from = _TRAITS_OWN
    elif context.__class__ is dict and context.get("traits"):
        traits_from = _TRAITS_CONTEXT
    return (
        message_id,
        kind,
        event,
        name,
        user_id,
        anonymous_id,
        previous_id,
        group_id,
        event_us,
        received_us,
        traits_from,
        get("properties") is not None,
        context is not None,
    )


_BATCH_FIELDS = (
    *_EVENT_COLUMNS,
    "event_us",
    "received_us",
    "traits_from",
    "has_properties",
    "has_context",
)
_NULLABLE_INT_FIELDS = frozenset({"received_us", "traits_from"})


def _column(name: str, values: tuple) -> Any:
    if name == "event_us":
        return np.array(values, dtype=np.int64)
    if name in _NULLABLE_INT_FIELDS:
        return pd.array(values, dtype="Int64")
    if name.startswith("has_"):
        return np.array(values, dtype=bool)
    return pd.Series(values, dtype=object)


def _load_events(con: duckdb.DuckDBPyConnection, path: Path, kind: str) -> tuple[int, int, int]:
    source = str(path)
    rejects = _Rejects(con, source, kind)
    parsed: list[tuple] = []
    raw_lines: list[str] = []
    lines: list[int] = []
    read = loaded = 0

    def flush() -> None:
        if not parsed:
            return
        columns: dict[str, Any] = {
            name: _column(name, values)
            for name, values in zip(_BATCH_FIELDS, zip(*parsed), strict=True)
        }
        columns["raw_json"] = pd.Series(raw_lines, dtype=object)
        columns["_source_line"] = pd.array(lines, dtype="int64")
        _insert_frame(con, _EVENTS_INSERT, columns, [source])
        parsed.clear()
        raw_lines.clear()
        lines.clear()

    with _open_binary(path) as fh:
        first = True
        for number, data in enumerate(fh, start=1):
            # Whitespace-only lines are not messages: they are counted neither as read
            # nor as rejected (so rows_read = rows_loaded + rows_rejected still holds).
            if data.isspace():
                continue
            if first:
                first = False
                _check_not_binary(path, data, number)
                data = data.removeprefix(codecs.BOM_UTF8)
            read += 1
            try:
                text = data.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                rejects.add(
                    number,
                    f"invalid JSON: not UTF-8 ({exc.reason} at byte {exc.start})",
                    data.decode("utf-8", "replace").rstrip("\r\n"),
                )
                continue
            try:
                message = _json_loads(text)
            except _JSONDecodeError as exc:
                rejects.add(number, f"invalid JSON: {exc}", text)
                continue
            try:
                parsed.append(_parse_message(message))
            except _Invalid as exc:
                rejects.add(number, str(exc), text)
                continue
            raw_lines.append(text)
            lines.append(number)
            loaded += 1
            if len(parsed) >= BATCH_ROWS:
                flush()
    flush()
    rejects.flush()
    return read, loaded, rejects.count


def _check_not_binary(path: Path, first_line: bytes, number: int) -> None:
    hint = _binary_hint(first_line, "JSON Lines")
    if hint is not None:
        raise UnreadableFile(
            f"{path} is not a JSON Lines file (binary content on line {number}); {hint}"
        )
