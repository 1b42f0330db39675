"""Event JSON Lines -> ``raw.events``, parsed, validated and extracted in DuckDB SQL.

Python only cuts the file into blocks of lines (numpy finds the newlines; each block goes
to DuckDB as an Arrow table of (line bytes, line number) without copying the bytes). One
SQL statement per block decodes, parses and validates every line and inserts the good ones
into ``raw.events`` (with all of DuckDB's threads: no RETURNING, insertion order not kept,
every row has its line number); the other lines of the block (usually none) are staged
again to go to ``raw.rejected_rows`` with their reason. A background thread reads (and
decompresses, and hashes for the file manifest) the next block while DuckDB works on the
current one, so memory stays at a few blocks whatever the file size.

Field rules (camelCase or snake_case names; the camelCase name wins when both are set):

* required: a JSON object; ``type`` in identify/track/page/screen/alias/group (any case);
  ``messageId``; a timestamp (``timestamp``, ``originalTimestamp`` or ``receivedAt``);
  ``userId`` or ``anonymousId``; ``event`` for track; ``previousId`` and ``userId`` for alias;
* every timestamp present (timestamp, originalTimestamp, sentAt, receivedAt) must parse;
* ids and names are strings or numbers; traits, properties and context are objects;
* ``event_at`` is corrected for the device's clock as Segment does when originalTimestamp,
  sentAt and receivedAt are all present: receivedAt - (sentAt - originalTimestamp); else it
  is timestamp, else originalTimestamp, else receivedAt;
* ``traits`` falls back to ``context.traits``. Other top-level fields (integrations,
  channel, version, ...) have no column and are not kept.
"""

from __future__ import annotations

import codecs
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import duckdb
import numpy as np
import orjson
import pyarrow as pa
from duckdb.sqltypes import BLOB, VARCHAR

from orchestration.loading.files import Fingerprint, UnreadableFile, binary_hint, open_binary
from orchestration.loading.schema import MESSAGE_TYPES_SQL

BLOCK_BYTES = 32 << 20  # bytes of the file read per block (a line never spans two blocks)
# Lines per Arrow record batch of a block. DuckDB scans an Arrow table one record batch per
# thread, so a block in one batch (about 48,000 lines) was parsed by one thread: in batches of
# this size both cores parse (at a million customers, 10 files loaded in 6.5-6.9 s against
# 7.6-8.2 s, see BENCHMARKS.md).
BATCH_LINES = 8192
# Blocks read ahead while DuckDB loads one. With this many queued, one being loaded and one
# being read, a plain file's blocks are read into _PREFETCH + 2 buffers in turn.
_PREFETCH = 1
_SNIFF_BYTES = 1 << 16

# -------------------------------------------------------------------------- line blocks


@dataclass(frozen=True)
class LineBlock:
    """Consecutive lines of a file: Arrow columns ``raw`` (bytes, with the newline) and
    ``line`` (1-based physical line number), in record batches of ``BATCH_LINES`` lines
    (zero-copy slices); ``position`` is how far into the stored file (compressed bytes for
    .gz) reading has come."""

    lines: pa.Table
    position: int


def line_blocks(
    path: Path,
    block_bytes: int = BLOCK_BYTES,
    fingerprint: Fingerprint | None = None,
    reuse: int = 0,
) -> Iterator[LineBlock]:
    """The lines of a JSON Lines file in blocks of about ``block_bytes``.

    A UTF-8 byte order mark at the start is dropped. Raises UnreadableFile when the first
    line that is not blank looks binary (gzip without .gz, UTF-16, zip, NUL bytes). With
    ``fingerprint``, the stored bytes are hashed as they are read.

    ``reuse`` > 0 reads a plain file into that many buffers in turn instead of a new one per
    block (no fresh memory to fault in per block): a block's bytes are then overwritten
    ``reuse`` blocks later, so the caller must be done with each block by then.
    """
    with open_binary(path, fingerprint) as fh:
        stored = getattr(fh, "fileobj", fh)  # the compressed file under a GzipFile
        gzipped = stored is not fh
        buffers: list[bytearray | None] = [None] * (reuse if not gzipped else 0)
        newlines = np.empty(0, dtype=bool)
        carry: bytes | memoryview = b""
        next_line = 1
        checked = False
        turn = 0
        while True:
            if buffers:  # read after the carried part, into the next buffer of the ring
                need = len(carry) + block_bytes
                buffer = buffers[turn % len(buffers)]
                if buffer is None or len(buffer) < need:
                    buffer = buffers[turn % len(buffers)] = bytearray(need)
                view = memoryview(buffer)
                view[: len(carry)] = carry
                got = fh.readinto(view[len(carry) : need])
                at_end = not got
                size = len(carry) + got
                data: bytes | memoryview = view[:size]
            else:
                chunk = fh.read(block_bytes)
                at_end = not chunk
                data = bytes(carry) + chunk if carry else chunk
                size = len(data)
            if not size:
                return
            if newlines.size < size:
                newlines = np.empty(max(size, block_bytes), dtype=bool)
            found = newlines[:size]
            np.equal(np.frombuffer(data, dtype=np.uint8), 10, out=found)
            ends = np.flatnonzero(found)
            ends += 1
            if at_end and (not ends.size or ends[-1] != size):
                ends = np.append(ends, size)  # the last line has no newline
            if not ends.size:
                carry = bytes(data)  # a line longer than a block: read on
                continue
            end = int(ends[-1])
            start = 0
            if next_line == 1 and bytes(data[:3]) == codecs.BOM_UTF8:
                start = len(codecs.BOM_UTF8)
            if not checked:
                sniffed = bytes(data[start : min(end, start + _SNIFF_BYTES * 4)])
                checked = _check_text(path, sniffed, next_line)
            offsets = np.empty(ends.size + 1, dtype=np.int64)
            offsets[0] = start
            offsets[1:] = ends
            raw = pa.LargeBinaryArray.from_buffers(
                pa.large_binary(), ends.size, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
            )
            numbers = pa.array(np.arange(next_line, next_line + ends.size, dtype=np.int64))
            batches = pa.table({"raw": raw, "line": numbers}).to_batches(BATCH_LINES)
            yield LineBlock(pa.Table.from_batches(batches), stored.tell())
            turn += 1  # the next buffer only after a block: a long line reads on in this one
            next_line += ends.size
            carry = data[end:]
            if at_end:
                return


def _check_text(path: Path, data: bytes, first_line: int) -> bool:
    """Raise UnreadableFile if the first line that is not blank looks binary.

    Returns whether such a line was found (else the next block is checked).
    """
    for number, line in enumerate(data[: _SNIFF_BYTES * 4].split(b"\n"), start=first_line):
        if line.isspace() or not line:
            continue
        hint = binary_hint(line[:_SNIFF_BYTES].removeprefix(codecs.BOM_UTF8), "JSON Lines")
        if hint is not None:
            raise UnreadableFile(
                f"{path} is not a JSON Lines file (binary content on line {number}); {hint}"
            )
        return True
    return False


T = TypeVar("T")


def prefetched(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead.

    Reading and gzip decompression release the GIL, as does DuckDB while it executes, so
    the next block is read while the current one is loaded. An exception raised by
    ``items`` is raised here; leaving the loop early stops the thread.
    """
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        handoff.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            handoff.put((done, None))
        except BaseException as error:  # handed over to the consumer, raised there
            handoff.put((done, error))

    worker = threading.Thread(target=produce, name="cdp-line-reader", daemon=True)
    worker.start()
    try:
        while True:
            item, error = handoff.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                handoff.get(timeout=0.1)
            except queue.Empty:
                continue
        worker.join()


# -------------------------------------------------------------------------- SQL

# (column, JSON keys): the camelCase key first. Strings are read as text, numbers as written.
_TEXT_FIELDS = {
    "message_id": ("messageId", "message_id"),
    "user_id": ("userId", "user_id"),
    "anonymous_id": ("anonymousId", "anonymous_id"),
    "event": ("event",),
    "previous_id": ("previousId", "previous_id"),
    "name": ("name",),
    "group_id": ("groupId", "group_id"),
}
_TIMESTAMP_FIELDS = {
    "timestamp_at": ("timestamp",),
    "original_at": ("originalTimestamp", "original_timestamp"),
    "sent_at": ("sentAt", "sent_at"),
    "received_at": ("receivedAt", "received_at"),
}
_OBJECT_FIELDS = ("traits", "properties", "context")
_STRUCTURE = orjson.dumps(
    {
        "type": "VARCHAR",
        **{key: "VARCHAR" for keys in _TEXT_FIELDS.values() for key in keys},
        **{key: "VARCHAR" for keys in _TIMESTAMP_FIELDS.values() for key in keys},
        **dict.fromkeys(_OBJECT_FIELDS, "JSON"),
    }
).decode()
_WHITESPACE = r"'[ \t\n\r\x0b\x0c]*'"
_NOT_UTF8 = "cdp_not_utf8_reason"
_JSON_ERROR = "cdp_json_error"
_LOSSY_TEXT = "cdp_lossy_text"


def _first(keys: tuple[str, ...]) -> str:
    """SQL: the first of the JSON keys that is set (camelCase before snake_case)."""
    values = [f'm."{key}"' for key in keys]
    value = values[0] if len(values) == 1 else f"coalesce({', '.join(values)})"
    return f"nullif({value}, '')"


def _shown(expression: str) -> str:
    """SQL: the value cut to 80 characters and quoted, for a reason."""
    cut = (
        f"CASE WHEN length({expression}) <= 80 THEN {expression} "
        f"ELSE left({expression}, 77) || '...' END"
    )
    return f"'''' || {cut} || ''''"


def _wrong_type(column: str, keys: tuple[str, ...]) -> str:
    """SQL: 'a boolean', 'an object' or 'an array' when a text field holds one, else NULL.

    from_json gives such values as their JSON text; json_type on the line tells them from a
    string that merely looks like one ("true", "{x}"), and runs only for those.
    """
    types = [f"nullif(json_type(text, '$.{key}'), 'NULL')" for key in keys]
    found = types[0] if len(types) == 1 else f"coalesce({', '.join(types)})"
    return (
        f"CASE WHEN {column} IN ('true', 'false') OR starts_with({column}, '{{') "
        f"OR starts_with({column}, '[') THEN CASE {found} WHEN 'BOOLEAN' THEN 'a boolean' "
        "WHEN 'OBJECT' THEN 'an object' WHEN 'ARRAY' THEN 'an array' END END"
    )


def _not_an_object(column: str) -> str:
    """SQL: what a traits/properties/context value is when it is not an object, else NULL."""
    value = f"{column}_json::VARCHAR"
    return (
        f"CASE WHEN NOT starts_with({value}, '{{') AND {value} <> '[]' THEN "
        f"CASE left({value}, 1) WHEN '\"' THEN 'a string' WHEN '[' THEN 'an array' "
        "WHEN 't' THEN 'a boolean' WHEN 'f' THEN 'a boolean' ELSE 'a number' END END"
    )


def _empty(value: str) -> str:
    """SQL: the JSON value is {} or [] (PHP sends an empty object as [])."""
    return f"{value}::VARCHAR IN ('{{}}', '[]')"


def _wrong_text_type(column: str) -> tuple[str, str]:
    keys = _TEXT_FIELDS[column]
    found = _wrong_type(column, keys)
    return (
        f"({found}) IS NOT NULL",
        f"'invalid ''{keys[0]}'': expected a string, found ' || {found}",
    )


def _reason() -> str:
    """SQL: why a line is rejected; NULL when it is loaded (or blank)."""
    checks = [
        ("text IS NULL", f"{_NOT_UTF8}(raw)"),
        ("is_blank", "NULL"),
        ("NOT is_json", f"'invalid JSON: ' || coalesce({_JSON_ERROR}(text), 'not JSON')"),
        ("strict_error IS NOT NULL", "'invalid JSON: ' || strict_error"),
        ("NOT is_object", "'not a JSON object'"),
        ("type_text IS NULL", "'missing required field ''type'''"),
        (f"type NOT IN ({MESSAGE_TYPES_SQL})", f"'unknown message type ' || {_shown('type_text')}"),
        _wrong_text_type("message_id"),
        ("message_id IS NULL", "'missing required field ''messageId'''"),
        (
            "timestamp_at_text IS NULL AND original_at_text IS NULL AND received_at_text IS NULL",
            "'missing required field ''timestamp'''",
        ),
    ]
    for column, keys in _TIMESTAMP_FIELDS.items():
        checks.append(
            (
                f"{column}_text IS NOT NULL AND {column} IS NULL",
                f"'unparseable timestamp in ''{keys[0]}'': ' || {_shown(column + '_text')}",
            )
        )
    checks += [_wrong_text_type(column) for column in _TEXT_FIELDS if column != "message_id"]
    for column in _OBJECT_FIELDS:
        found = _not_an_object(column)
        checks.append(
            (
                f"({found}) IS NOT NULL",
                f"'invalid ''{column}'': expected an object, found ' || {found}",
            )
        )
    checks += [
        ("user_id IS NULL AND anonymous_id IS NULL", "'missing userId and anonymousId'"),
        ("type = 'track' AND event IS NULL", "'track message without ''event'''"),
        ("type = 'alias' AND previous_id IS NULL", "'alias message without ''previousId'''"),
        ("type = 'alias' AND user_id IS NULL", "'alias message without ''userId'''"),
    ]
    return "CASE " + " ".join(f"WHEN {when} THEN {then}" for when, then in checks) + " END"


def _stage_sql(lines: str) -> str:
    """SQL: one row per line of the relation ``lines`` (raw, line): its reason and every
    raw.events column."""
    text_fields = ", ".join(f"{_first(keys)} AS {column}" for column, keys in _TEXT_FIELDS.items())
    timestamp_texts = ", ".join(
        f"{_first(keys)} AS {column}_text" for column, keys in _TIMESTAMP_FIELDS.items()
    )
    timestamps = ", ".join(
        f"try_cast({column}_text AS TIMESTAMPTZ) AS {column}" for column in _TIMESTAMP_FIELDS
    )
    objects = ", ".join(f"m.{column} AS {column}_json" for column in _OBJECT_FIELDS)
    context_traits = "json_extract(context_json, '$.traits')"
    return f"""
WITH decoded AS (
    SELECT line, raw, try(decode(raw)) AS text FROM {lines}
),
parsed AS (
    SELECT line, raw, text, try(from_json(text, '{_STRUCTURE}')) AS m FROM decoded
),
fields AS (
    SELECT line, raw, text, m IS NOT NULL AS is_json, nullif(m.type, '') AS type_text,
        CASE WHEN m.type IN ({MESSAGE_TYPES_SQL}) THEN m.type ELSE lower(trim(m.type)) END AS type,
        {text_fields}, {timestamp_texts}, {objects}
    FROM parsed
),
typed AS (
    SELECT *, {timestamps},
        CASE WHEN NOT is_json AND text IS NOT NULL
            THEN regexp_full_match(text, {_WHITESPACE}) ELSE false END AS is_blank,
        CASE WHEN is_json AND (contains(text, 'NaN') OR contains(text, 'Infinity'))
            THEN {_JSON_ERROR}(text) END AS strict_error,
        CASE WHEN is_json AND NOT starts_with(text, '{{') THEN json_type(text) = 'OBJECT'
            ELSE is_json END AS is_object
    FROM fields
),
checked AS (
    SELECT *, {_reason()} AS reason FROM typed
)
SELECT line, is_blank, reason,
    CASE WHEN reason IS NOT NULL
        THEN rtrim(coalesce(text, {_LOSSY_TEXT}(raw)), chr(13) || chr(10)) END AS raw_text,
    message_id, type, event, name, user_id, anonymous_id, previous_id, group_id,
    CASE WHEN original_at IS NOT NULL AND sent_at IS NOT NULL AND received_at IS NOT NULL
        THEN received_at - (sent_at - original_at)
        ELSE coalesce(timestamp_at, original_at, received_at)
    END AS event_at,
    received_at, sent_at, original_at,
    CASE
        WHEN traits_json IS NOT NULL AND NOT {_empty("traits_json")} THEN traits_json
        WHEN contains(context_json::VARCHAR, '"traits"')
            AND json_type(context_json, '$.traits') = 'OBJECT'
            AND NOT {_empty(context_traits)} THEN {context_traits}
    END AS traits,
    CASE WHEN NOT {_empty("properties_json")} THEN properties_json END AS properties,
    CASE WHEN NOT {_empty("context_json")} THEN context_json END AS context
FROM checked
"""


_EVENT_COLUMNS = (
    "message_id, type, event, name, user_id, anonymous_id, previous_id, group_id, event_at, "
    "received_at, sent_at, original_at, traits, properties, context"
)
# The good lines of a block go to raw.events (the statement gives their count). Only when
# some lines were not inserted (rejected or blank, usually none) are those lines, and only
# those, staged again for raw.rejected_rows: the block's lines that have no row in
# raw.events. No RETURNING: it would make DuckDB insert with one thread.
INSERT_EVENTS_SQL = f"""
INSERT INTO raw.events ({_EVENT_COLUMNS}, _source_file, _source_line, _loaded_at)
SELECT {_EVENT_COLUMNS}, $source, line, now() FROM ({_stage_sql("_cdp_lines")})
WHERE reason IS NULL AND NOT is_blank
"""
_NOT_INSERTED = """(
    SELECT raw, line FROM _cdp_lines WHERE line NOT IN (
        SELECT _source_line FROM raw.events
        WHERE _source_file = $source AND _source_line BETWEEN $first AND $last
    )
)"""
INSERT_REJECTS_SQL = f"""
INSERT INTO raw.rejected_rows (source_file, source_line, file_kind, reason, raw_text, rejected_at)
SELECT $source, line, $kind, reason, raw_text, now() FROM ({_stage_sql(_NOT_INSERTED)})
WHERE reason IS NOT NULL
"""


# -------------------------------------------------------------------------- Python helpers
# DuckDB calls these only for the rare lines that need them (CASE evaluates lazily).


def _not_utf8_reason(raw: bytes) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"invalid JSON: not UTF-8 ({error.reason} at byte {error.start})"
    return "invalid JSON: not UTF-8 text"  # e.g. a NUL byte DuckDB does not accept


def _json_error(text: str) -> str | None:
    """orjson's strict message (no NaN, no trailing comma) for an invalid line, else None."""
    try:
        orjson.loads(text.rstrip("\r\n"))
    except orjson.JSONDecodeError as error:
        return str(error)
    return None


def _lossy_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").replace("\x00", "\ufffd")


_FUNCTIONS = (
    (_NOT_UTF8, _not_utf8_reason, [BLOB], VARCHAR),
    (_JSON_ERROR, _json_error, [VARCHAR], VARCHAR),
    (_LOSSY_TEXT, _lossy_text, [BLOB], VARCHAR),
)


# -------------------------------------------------------------------------- loading


@contextmanager
def event_loading(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Prepare the database for ``load_events`` on ``con`` and its cursors, and undo it after.

    It registers the Python helpers the SQL calls, and it turns off the global
    ``preserve_insertion_order``: lines keep their number in ``_source_line``, so DuckDB may
    append them in any order, which lets it insert with all its threads. Both are
    database-wide, so they are set once for all the files loaded at the same time.
    """
    for name, function, parameters, returns in _FUNCTIONS:
        con.create_function(name, function, parameters, returns, side_effects=False)
    order = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]
    con.execute("SET preserve_insertion_order = false")
    try:
        yield
    finally:
        con.execute(f"SET preserve_insertion_order = {order}")
        for name, *_rest in _FUNCTIONS:
            con.remove_function(name)


def load_events(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    kind: str,
    on_block: Callable[[int], None] | None = None,
    fingerprint: Fingerprint | None = None,
) -> tuple[int, int, int]:
    """Load one JSON Lines file (inside the caller's transaction, within ``event_loading``).

    Returns (rows read, loaded, rejected); blank lines are neither. ``on_block`` is called
    with the position reached in the stored file after each block. ``fingerprint`` (if
    given) receives the file's stored bytes as they are read.
    """
    source = str(path)
    zone = con.execute("SELECT current_setting('TimeZone')").fetchall()[0][0]
    con.execute("SET TimeZone = 'UTC'")  # a timestamp without offset is UTC (this session only)
    loaded = rejected = 0
    try:
        blocks = line_blocks(path, BLOCK_BYTES, fingerprint, reuse=_PREFETCH + 2)
        for block in prefetched(blocks, _PREFETCH):
            lines = block.lines
            con.register("_cdp_lines", lines)
            try:
                inserted = con.execute(INSERT_EVENTS_SQL, {"source": source}).fetchall()[0][0]
                loaded += inserted
                if inserted < lines.num_rows:
                    numbers = lines.column("line")
                    bounds = {"first": numbers[0].as_py(), "last": numbers[-1].as_py()}
                    rejected += con.execute(
                        INSERT_REJECTS_SQL, {"source": source, "kind": kind, **bounds}
                    ).fetchall()[0][0]
            finally:
                con.unregister("_cdp_lines")
            if on_block is not None:
                on_block(block.position)
    finally:
        con.execute(f"SET TimeZone = '{zone}'")
    return loaded + rejected, loaded, rejected
