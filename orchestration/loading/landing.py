"""The landing directory: which files are exports, and loading each one at most once.

Every file is loaded in one transaction: its rows, its rejected rows and its
``raw.loaded_files`` row are committed together or not at all. Event files new to their path
load two at a time, and are committed in the files' order (``_load_files``). Files are
identified by their absolute path and the sha256 of their bytes as stored (compressed bytes
for ``.gz``; an event file new to its path is hashed while it loads), which makes a second
run over the same landing directory a no-op. For CRM files the
fingerprint of the mappings (presets and ``crm/mapping.yml``) counts too: a changed
mapping loads the CRM files again. ``load_landing`` opens and commits those transactions
itself, so the connection must not be inside one.

As git's index does, a file whose size, modification time, change time and inode are those
recorded when it was loaded is not read again (its recorded hash stands); any difference
makes the loader hash it. The stat is taken before the file is read, so a file changed
while it loads is hashed next run; and it is not recorded for a file changed less than
``RACY_SECONDS`` before it (a change within the same tick of the filesystem's clock could
leave all four values as they were), so such a file is hashed once more next run.

Files are never deleted from the raw tables because they disappeared from the landing
directory; only a changed file's earlier rows are replaced.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from queue import SimpleQueue

import duckdb

from orchestration.loading.crm import load_crm
from orchestration.loading.events import event_loading, load_events
from orchestration.loading.files import (
    GZIP_ERRORS,
    Fingerprint,
    UnreadableFile,
    fingerprint,
    os_error_message,
)
from orchestration.loading.mappings import LANDING_MAPPING, CrmMappings, load_crm_mappings
from orchestration.loading.schema import CRM_KINDS, FILE_KINDS, RAW_TABLES, ensure_raw_schema
from orchestration.warehouse import cursor as warehouse_cursor

LAYOUT_HELP = (
    "expected a landing directory containing crm/contacts*.csv, crm/companies*.csv, "
    "crm/deals*.csv, crm/tickets*.csv and events/*.jsonl or events/*.jsonl.gz"
)
PROGRESS_SECONDS = 5.0  # a long file reports its progress this often
# DuckDB's memory during a load (it spills beyond); with the default of 80% of the machine
# it would keep every block it wrote cached, and a large load would look unbounded.
LOAD_MEMORY_LIMIT = "1GB"
# Event files new to their path load this many at a time. One file's load leaves a core idle
# part of the time (its inserts' writes and commit); at a million customers 20 files loaded
# in 13.6-14.1 s two at a time against 18.8-20.4 s one after another (BENCHMARKS.md).
PARALLEL_FILES = 2
_BAR_WIDTH = 20
# A file's stat is recorded only if its last change (ctime) is at least this much older than
# the stat: a coarse filesystem clock (FAT: 2 s) could give a later change the same times.
RACY_SECONDS = 2.0
_STAT_COLUMNS = ("file_size", "file_mtime_ns", "file_ctime_ns", "file_inode")


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
    mapping: str | None = None  # for CRM files: the mapping that read the header


@dataclass
class LoadReport:
    files: list[FileLoad] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)
    # rows this load added to raw.events whose message id an earlier row has (of this load
    # or of an earlier one); the run summary counts them over all of raw.events
    repeated_message_ids: int = 0

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


# --------------------------------------------------------------------------- entry point


def load_landing(
    con: duckdb.DuckDBPyConnection,
    landing_dir: Path,
    progress: Callable[[str], None] | None = None,
) -> LoadReport:
    """Load every export of ``landing_dir`` that is new or changed into the raw tables.

    ``progress`` receives one line per file, and for a long file a progress bar line every
    few seconds.
    """
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
    mappings = load_crm_mappings(landing_dir)
    if mappings.error:
        say(f"CRM exports are not loaded: {mappings.error}")

    report = LoadReport(ignored=ignored)
    memory_limit = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    con.execute(f"SET memory_limit = '{LOAD_MEMORY_LIMIT}'")
    try:
        with event_loading(con):
            for result in _load_files(con, exports, mappings, landing_dir, say):
                report.files.append(result)
                say(_describe(result, _rel(result.path, landing_dir), landing_dir))
    finally:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    for path in ignored:
        say(f"{_rel(path, landing_dir)}: ignored (not a recognised export name)")

    loaded = [str(f.path) for f in report.files if f.kind == "events" and f.rows_loaded]
    report.repeated_message_ids = _repeated_message_ids(con, loaded)
    return report


def _repeated_message_ids(con: duckdb.DuckDBPyConnection, sources: list[str]) -> int:
    """How many rows of these event files have a message id that an earlier row has.

    That is the rows, less their distinct ids, plus those distinct ids that rows of other
    files have. Only the new ids are looked up among the other rows: counting the distinct
    ids of all of raw.events took 2.4-4.0 s at 20M rows, in every run. They are made distinct
    before the lookup: 0.45 s against 1.1 s for 191,240 new rows among 20M. When no other file
    has rows (the first load), there is nothing to look up, and no hash table of the new ids
    to build for it: at a million customers (18.9M rows) 2.1-2.4 s against 3.6-4.0 s (6.7 s
    the first time). Asking whether another file has a row stops at the first one: 1-2 ms for
    a later load at 19M rows (a count of them took 0.05 s).
    """
    if not sources:
        return 0
    others = con.execute(
        "SELECT EXISTS (SELECT 1 FROM raw.events "
        "WHERE _source_file NOT IN (SELECT unnest($sources)))",
        {"sources": sources},
    ).fetchall()[0][0]
    if not others:  # every row of raw.events is of these files
        row = con.execute("SELECT count(*) - count(DISTINCT message_id) FROM raw.events")
        return int(row.fetchall()[0][0])
    row = con.execute(
        """
        WITH new AS (
            SELECT message_id FROM raw.events WHERE _source_file IN (SELECT unnest($sources))
        ),
        new_ids AS (
            SELECT DISTINCT message_id FROM new
        )
        SELECT (SELECT count(*) FROM new) - (SELECT count(*) FROM new_ids)
            + (SELECT count(DISTINCT message_id) FROM raw.events
               WHERE _source_file NOT IN (SELECT unnest($sources))
                   AND message_id IN (SELECT message_id FROM new_ids))
        """,
        {"sources": sources},
    ).fetchall()
    return int(row[0][0])


def discover_landing(landing_dir: Path) -> tuple[list[tuple[Path, str]], list[Path]]:
    """(path, kind) of every export in crm/ and events/ (sorted), and the ignored paths.

    Only the two folders are scanned; files at the landing root (truth.csv, README, ...)
    are not exports and are not reported. ``crm/mapping.yml`` is configuration, not an export.
    """
    exports: list[tuple[Path, str]] = []
    ignored: list[Path] = []
    for folder in ("crm", "events"):
        directory = landing_dir / folder
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            if path == landing_dir / LANDING_MAPPING:
                continue
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


def _describe(result: FileLoad, name: str, root: Path) -> str:
    if result.mapping:
        name = f"{name} ({result.mapping} mapping)"
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


class _ProgressBar:
    """Reports how far a long file has come, at most every PROGRESS_SECONDS."""

    def __init__(self, name: str, say: Callable[[str], None], total_bytes: int) -> None:
        self.name, self.say, self.total = name, say, total_bytes
        self.started = self.last = time.monotonic()

    def __call__(self, position: int) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_SECONDS or not self.total:
            return
        self.last = now
        done = min(position / self.total, 1.0)
        filled = round(done * _BAR_WIDTH)
        rate = position / (now - self.started) if now > self.started else 0.0
        left = f", about {(self.total - position) / rate:.0f}s left" if rate else ""
        self.say(
            f"{self.name} [{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {done:4.0%} of "
            f"{self.total / 1e6:,.1f} MB, {rate / 1e6:,.1f} MB/s{left}"
        )


# --------------------------------------------------------------------------- one file


def _load_files(
    con: duckdb.DuckDBPyConnection,
    exports: list[tuple[Path, str]],
    mappings: CrmMappings,
    landing_dir: Path,
    say: Callable[[str], None],
) -> Iterator[FileLoad]:
    """Load the exports and yield what happened to each, in their order.

    An event file new to its path loads while the previous one does (PARALLEL_FILES at a
    time), on a cursor of its own, in a transaction of its own; the files are finished (the
    copy check, their raw.loaded_files row, the commit) one at a time and in order, so each
    finish sees every earlier file committed, as if they had loaded one after another. Any
    other file (CRM, or a path loaded before: its earlier rows are replaced, or it is
    unchanged) waits for the files before it and loads alone on ``con``. If a file fails,
    the files before it are committed, and it and any file after it are rolled back.
    """
    pending: deque[FileLoad | _Loading] = deque()  # in export order, oldest first
    # Loading threads hand their progress lines to this thread, which says them while it waits
    # (a Dagster step's log is written from the step's thread).
    progress_lines: SimpleQueue[str] = SimpleQueue()

    def finished(entry: FileLoad | _Loading) -> FileLoad:
        if isinstance(entry, _Loading):
            while not wait([entry.future], timeout=0.5).done:
                while not progress_lines.empty():
                    say(progress_lines.get())
        while not progress_lines.empty():
            say(progress_lines.get())
        return _finished(con, entry)

    with ThreadPoolExecutor(PARALLEL_FILES, thread_name_prefix="cdp-load") as pool:
        try:
            for path, kind in exports:
                previous = _previous(con, path)
                if kind != "events" or previous is not None:
                    while pending:
                        yield finished(pending.popleft())
                    yield _load_one(con, path, kind, previous, mappings, landing_dir, say)
                    continue
                pending.append(_start_new_events(con, pool, path, landing_dir, progress_lines.put))
                while sum(isinstance(entry, _Loading) for entry in pending) >= PARALLEL_FILES:
                    yield finished(pending.popleft())
            while pending:
                yield finished(pending.popleft())
        except BaseException:
            for entry in pending:
                if isinstance(entry, _Loading):
                    entry.abandon()
            raise


@dataclass
class _Loading:
    """An event file new to its path, loading in its own transaction on ``cursor``."""

    path: Path
    cursor: duckdb.DuckDBPyConnection
    future: Future
    read: Fingerprint
    record: tuple[int, int, int, int] | None

    def abandon(self) -> None:
        """Wait for the load to end and roll it back."""
        try:
            self.future.result()
        except BaseException:  # it rolled itself back; the error that stopped the run is raised
            pass
        else:
            self.cursor.rollback()
        finally:
            self.cursor.close()


def _previous(con: duckdb.DuckDBPyConnection, path: Path) -> tuple | None:
    """The raw.loaded_files row of this path: content_hash, status, file_kind,
    crm_mapping_hash, then the recorded stat (NULLs: not recorded); None if never loaded."""
    found = con.execute(
        "SELECT content_hash, status, file_kind, crm_mapping_hash, "
        f"{', '.join(_STAT_COLUMNS)} FROM raw.loaded_files WHERE file_path = ?",
        [str(path)],
    ).fetchall()
    return found[0] if found else None


def _start_new_events(
    con: duckdb.DuckDBPyConnection,
    pool: ThreadPoolExecutor,
    path: Path,
    landing_dir: Path,
    say: Callable[[str], None],
) -> FileLoad | _Loading:
    """Start loading an event file new to its path on a cursor of ``con``; it is hashed while
    it loads (one read instead of two), and ``_finished`` looks for a copy and commits."""
    try:
        stat = os.stat(path)  # before reading: a file changed while it loads differs next run
    except OSError as exc:
        return _unreadable(path, "events", exc)
    record = _stat_values(stat) if _settled(stat, time.time_ns()) else None
    progress = _ProgressBar(_rel(path, landing_dir), say, stat.st_size)
    cursor = warehouse_cursor(con)
    read = Fingerprint()

    def load() -> tuple[int, int, int]:
        cursor.begin()
        try:
            return load_events(cursor, path, "events", progress, read)
        except BaseException:
            cursor.rollback()
            raise

    return _Loading(path, cursor, pool.submit(load), read, record)


def _finished(con: duckdb.DuckDBPyConnection, entry: FileLoad | _Loading) -> FileLoad:
    """Wait for a new event file's load and finish it: a copy of a file loaded earlier (under
    another path) is rolled back and recorded as a duplicate; otherwise commit."""
    if isinstance(entry, FileLoad):
        return entry
    source = str(entry.path)
    cursor = entry.cursor
    try:
        try:
            counts = entry.future.result()
        except (UnreadableFile, OSError, *GZIP_ERRORS) as exc:
            return _unreadable(entry.path, "events", exc)
        try:
            digest = entry.read.hexdigest()
            # con is in no transaction: it sees every file committed before this one
            original = _original(con, digest, entry.read.size, source)
            if original is None:
                result = FileLoad(entry.path, "events", "loaded")
                result.rows_read, result.rows_loaded, result.rows_rejected = counts
            else:  # loaded already under another path
                cursor.rollback()
                cursor.begin()
                result = FileLoad(entry.path, "events", "duplicate", duplicate_of=original)
            _record(cursor, result, digest, None, entry.record)
            cursor.commit()
        except BaseException:
            cursor.rollback()
            raise
        return result
    finally:
        cursor.close()


def _record(
    con: duckdb.DuckDBPyConnection,
    result: FileLoad,
    digest: str,
    mapping_hash: str | None,
    record: tuple[int, int, int, int] | None,
) -> None:
    """Write the file's raw.loaded_files row (replacing any earlier one) in the transaction."""
    source = str(result.path)
    con.execute("DELETE FROM raw.loaded_files WHERE file_path = ?", [source])
    con.execute(
        "INSERT INTO raw.loaded_files (file_path, file_kind, content_hash, rows_read, "
        "rows_loaded, rows_rejected, status, loaded_at, crm_mapping, crm_mapping_hash, "
        f"{', '.join(_STAT_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, now(), ?, ?, ?, ?, ?, ?)",
        [
            source,
            result.kind,
            digest,
            result.rows_read,
            result.rows_loaded,
            result.rows_rejected,
            result.status,
            result.mapping or None,
            mapping_hash,
            *(record or (None,) * len(_STAT_COLUMNS)),
        ],
    )


def _load_one(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    kind: str,
    previous: tuple | None,
    mappings: CrmMappings,
    landing_dir: Path,
    say: Callable[[str], None],
) -> FileLoad:
    """Load a CRM file, or an event file loaded before under this path, alone on ``con``."""
    source = str(path)
    mapping_hash = mappings.fingerprint if kind in CRM_KINDS else None
    recorded = tuple(previous[4:]) if previous is not None else None  # NULLs: not recorded

    # A file whose stat is the one recorded at its load is not read: its recorded hash
    # stands. Any other file is hashed first: it may be unchanged.
    try:
        stat = os.stat(path)  # before reading: a file changed while it loads differs next run
        current = _stat_values(stat)
        record = current if _settled(stat, time.time_ns()) else None
        size = stat.st_size
        if previous is not None and current == recorded:
            digest = previous[0]
        else:
            digest, size = fingerprint(path)
    except OSError as exc:
        return _unreadable(path, kind, exc)
    original = _original(con, digest, size, source)

    same_bytes = previous is not None and previous[0] == digest
    if same_bytes and previous[1] == "duplicate" and original is None:
        status = "loaded"  # the file it duplicated no longer holds these bytes
    elif same_bytes and previous[3] == mapping_hash:
        if record != recorded:  # same bytes, new stat: record it, the next run skips the hash
            con.execute(
                f"UPDATE raw.loaded_files SET {', '.join(f'{c} = ?' for c in _STAT_COLUMNS)} "
                "WHERE file_path = ?",
                [*(record or (None,) * len(_STAT_COLUMNS)), source],
            )
        return FileLoad(path, kind, "unchanged")
    elif original is not None:
        status = "duplicate"
    else:
        status = "replaced" if previous is not None else "loaded"

    progress = _ProgressBar(_rel(path, landing_dir), say, size)
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
            if kind == "events":
                counts = load_events(con, path, kind, progress)
            else:
                *counts, result.mapping = load_crm(con, path, kind, mappings)
            result.rows_read, result.rows_loaded, result.rows_rejected = counts
        _record(con, result, digest, mapping_hash, record)
        con.commit()
    except (UnreadableFile, OSError, *GZIP_ERRORS) as exc:
        con.rollback()
        return _unreadable(path, kind, exc)
    except BaseException:
        con.rollback()
        raise
    return result


def _unreadable(path: Path, kind: str, exc: BaseException) -> FileLoad:
    """The load of a file that could not be read: UnreadableFile says why itself; an OS or
    gzip error is worded with the path."""
    error = str(exc) if isinstance(exc, UnreadableFile) else os_error_message(path, exc)
    return FileLoad(path, kind, "unreadable", error=error)


def _stat_values(stat: os.stat_result) -> tuple[int, int, int, int]:
    """(size, mtime ns, ctime ns, inode) as stored in raw.loaded_files."""
    return (
        _int64(stat.st_size),
        _int64(stat.st_mtime_ns),
        _int64(stat.st_ctime_ns),
        _int64(stat.st_ino),
    )


def _int64(value: int) -> int:
    """``value`` wrapped to a signed 64-bit integer (BIGINT): an inode number may use all 64
    bits."""
    return (value + 2**63) % 2**64 - 2**63


def _settled(stat: os.stat_result, taken_ns: int) -> bool:
    """Whether the file's last change is at least RACY_SECONDS older than its stat (taken at
    ``taken_ns``): only then does any later change give it another ctime."""
    return stat.st_ctime_ns <= taken_ns - int(RACY_SECONDS * 1e9)


def _original(con: duckdb.DuckDBPyConnection, digest: str, size: int, source: str) -> Path | None:
    """The path loaded earlier with these bytes, if any (never for an empty file: every
    empty file has the same hash, and an empty export is never a "copy" of another)."""
    if not size:
        return None
    found = con.execute(
        "SELECT file_path FROM raw.loaded_files WHERE content_hash = ? AND file_path <> ? "
        "AND status IN ('loaded', 'replaced') ORDER BY loaded_at, file_path LIMIT 1",
        [digest, source],
    ).fetchall()
    return Path(found[0][0]) if found else None
