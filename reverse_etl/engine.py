"""The sync engine: diff a model against what was delivered, send the difference, keep score.

How a run works (``run_sync``):

1. **Recover.** A run of this sync that ended without finishing (process killed) is closed
   as ``interrupted``: a file it had prepared is published and the batches it confirmed
   are folded into the state. What it had not confirmed is simply planned again below.
2. **Plan** (``plan_sync``). The model's mapped columns are rendered as canonical JSON
   (``json_object``; see ``_json_value``) keyed by ``CAST(primary_key AS VARCHAR)``,
   restricted to rows with consent, and hashed (md5). A FULL OUTER JOIN in DuckDB with
   ``sync_state`` gives ``added`` (new key), ``changed`` (hash differs) and ``removed``
   (key gone); the sync's mode turns them into operations (``MODE_OPERATIONS``), each with
   a deterministic id. A run writes its plan to a table of the ``reverse_etl`` schema
   (``sync_plan_<id>``, named in ``sync_runs.plan_table``) in the same transaction that
   logs the run as ``running``: a snapshot that later changes to the model do not affect.
3. **Deliver.** Operations are read in order, ``batch_size`` at a time (never the whole
   model in Python), and written by one sender thread while the engine journals the
   previous batch. Each answered batch is journaled in one small transaction: a row in
   ``sync_batches`` (its seq range and idempotency key) and its rejected rows in
   ``sync_row_errors``. Batches are confirmed strictly in order, so "delivered" is always
   the plan up to the last confirmed seq, minus rejected rows. A crash leaves at most two
   batches unconfirmed (the one on the wire, the one being journaled); the next run sends
   them again with the same batch and operation ids, which destinations apply once
   (idempotent writes, or deduplication by id). File
   destinations stage everything and are published after the journal records the run
   (two-phase; see ``destinations/base.py``).
4. **Finish.** One transaction folds the delivered part of the plan into ``sync_state``,
   drops the plan table and completes the run's row in ``sync_runs``.

A failing run (destination down after every retry, model missing, ...) keeps the batches
it confirmed, is logged as ``failed`` and raises ``SyncError``; the next run sends the rest.
Rejected rows are not in the state, so every run retries them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import duckdb

from reverse_etl.config import SyncConfig
from reverse_etl.destinations import (
    Batch,
    Destination,
    DestinationError,
    Operation,
    RowResult,
    SyncContext,
    build_destination,
    destination_class,
)
from reverse_etl.destinations.base import MODE_OPERATIONS, REMOVING_OPERATIONS, StagedDataLost
from reverse_etl.pii import redact

log = logging.getLogger(__name__)

STATE_SCHEMA = "reverse_etl"
#: Schemas never searched for an unqualified model name.
EXCLUDED_SCHEMAS = ("raw", STATE_SCHEMA, "information_schema", "pg_catalog")
PREVIEW_LIMIT = 20
READ_CHUNK = 20_000  # operations read from the plan per query
ROW_ERRORS_KEPT = 100

# No PRIMARY KEY on sync_state on purpose: DuckDB's ART index makes commits of large
# deletes very slow (11 s vs 0.6 s for 500k rows). The engine keeps (sync_name, record_key)
# unique itself: one operation per key per run, folded with delete-then-insert in one
# transaction.
STATE_DDL = (
    f"CREATE SCHEMA IF NOT EXISTS {STATE_SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.sync_state (
    sync_name VARCHAR NOT NULL,
    record_key VARCHAR NOT NULL,
    row_hash VARCHAR NOT NULL,
    fields JSON NOT NULL,
    synced_at TIMESTAMPTZ NOT NULL
)""",
    f"""CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.sync_runs (
    run_id VARCHAR NOT NULL PRIMARY KEY,
    sync_name VARCHAR NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    status VARCHAR NOT NULL,
    planned BIGINT,
    added BIGINT,
    changed BIGINT,
    removed BIGINT,
    failed BIGINT,
    duration_seconds DOUBLE,
    error VARCHAR,
    mode VARCHAR,
    destination_type VARCHAR,
    delivered BIGINT,
    batches BIGINT,
    output VARCHAR,
    pending_commit VARCHAR,
    plan_table VARCHAR
)""",
    f"""CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.sync_batches (
    sync_name VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    batch_no BIGINT NOT NULL,
    batch_id VARCHAR NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    confirmed_at TIMESTAMPTZ NOT NULL
)""",
    f"""CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.sync_row_errors (
    sync_name VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    batch_no BIGINT NOT NULL,
    record_key VARCHAR NOT NULL,
    operation VARCHAR NOT NULL,
    error VARCHAR NOT NULL,
    failed_at TIMESTAMPTZ NOT NULL
)""",
)
# sync_runs as the first version created it lacks these columns (and had NOT NULLs)
_RUNS_MIGRATION = (
    "ALTER TABLE {t} ALTER COLUMN finished_at DROP NOT NULL",
    "ALTER TABLE {t} ALTER COLUMN duration_seconds DROP NOT NULL",
    *(
        f"ALTER TABLE {{t}} ADD COLUMN IF NOT EXISTS {column}"
        for column in (
            "mode VARCHAR",
            "destination_type VARCHAR",
            "delivered BIGINT",
            "batches BIGINT",
            "output VARCHAR",
            "pending_commit VARCHAR",
            "plan_table VARCHAR",
        )
    ),
)


class SyncError(RuntimeError):
    """A sync could not run. The message names the sync and the reason.

    ``result`` is the logged failed run when the failure happened inside ``run_sync``.
    """

    def __init__(self, message: str, *, sync_name: str, result: SyncResult | None = None):
        super().__init__(message)
        self.sync_name = sync_name
        self.result = result


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def ensure_state_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the ``reverse_etl`` schema and its tables if missing (and upgrade old ones)."""
    for statement in STATE_DDL:
        con.execute(statement)
    has_new_columns = con.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_catalog = current_database()"
        f" AND table_schema = '{STATE_SCHEMA}' AND table_name = 'sync_runs'"
        " AND column_name = 'plan_table'"
    ).fetchone()[0]
    if not has_new_columns:
        for statement in _RUNS_MIGRATION:
            con.execute(statement.format(t=f"{STATE_SCHEMA}.sync_runs"))


def _fold_run(con: duckdb.DuckDBPyConnection, sync_name: str, run_id: str, plan_table: str) -> int:
    """Apply what run ``run_id`` delivered to ``sync_state`` and drop its plan table
    (inside the caller's transaction); return the number of operations delivered.

    Delivered = the plan up to the last confirmed seq (batches are confirmed in order),
    minus the rows the destination rejected.
    """
    plan = f"{STATE_SCHEMA}.{_ident(plan_table)}"
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database()"
        " AND table_schema = ? AND table_name = ?",
        [STATE_SCHEMA, plan_table],
    ).fetchone()[0]
    if not exists:
        return 0
    last_seq = con.execute(
        f"SELECT coalesce(max(last_seq), 0) FROM {STATE_SCHEMA}.sync_batches WHERE run_id = ?",
        [run_id],
    ).fetchone()[0]
    rejected = f"SELECT record_key FROM {STATE_SCHEMA}.sync_row_errors WHERE run_id = ?"
    delivered = (
        f"SELECT * FROM {plan} WHERE seq <= {int(last_seq)} AND record_key NOT IN"
        f" ({rejected.replace('?', _literal(run_id))})"
    )
    count = con.execute(f"SELECT count(*) FROM ({delivered})").fetchone()[0]
    if count:
        name = _literal(sync_name)
        removing = ", ".join(_literal(op) for op in REMOVING_OPERATIONS)
        con.execute(
            f"DELETE FROM {STATE_SCHEMA}.sync_state WHERE sync_name = {name}"
            f" AND record_key IN (SELECT record_key FROM ({delivered}))"
        )
        con.execute(
            f"INSERT INTO {STATE_SCHEMA}.sync_state"
            " (sync_name, record_key, row_hash, fields, synced_at)"
            f" SELECT {name}, record_key, row_hash, fields_json, now() FROM ({delivered})"
            f" WHERE op NOT IN ({removing})"
        )
    con.execute(f"DROP TABLE {plan}")
    return count


# --------------------------------------------------------------------------- planning


@dataclass
class SyncPlan:
    """What a run would send. The operations live in a DuckDB TEMP table of the
    connection (``table``); read them with ``batches()`` and ``close()`` the plan (or use
    it as a context manager) to drop that table. ``preview`` holds the first operations.
    """

    sync_name: str
    model: str  # resolved as schema.table
    mode: str
    added: int
    changed: int
    removed: int
    preview: list[Operation]
    table: str = field(repr=False)  # the plan table's name
    table_sql: str = field(repr=False, default="")  # how to name it in SQL
    field_types: dict[str, str] = field(repr=False, default_factory=dict)
    con: duckdb.DuckDBPyConnection | None = field(repr=False, default=None)

    @property
    def planned(self) -> int:
        return self.added + self.changed + self.removed

    def batches(self, size: int = 10_000) -> Iterator[Batch]:
        """Yield the operations in order (by key; removals last), ``size`` at a time.

        Batch ``n`` (from 1) holds the operations with ``(n-1)*size < seq <= n*size``.
        """
        if size < 1:
            raise ValueError("batch size must be at least 1")
        chunk = max(1, READ_CHUNK // size) * size  # read several batches per query
        number = 0
        for chunk_low in range(0, self.planned, chunk):
            rows = self._fetch(chunk_low, chunk_low + chunk)
            for start in range(0, len(rows), size):
                operations = rows[start : start + size]
                number += 1
                digest = hashlib.sha256("\n".join(op.id for op in operations).encode())
                yield Batch(id=digest.hexdigest()[:32], number=number, operations=operations)

    def operations(self) -> Iterator[Operation]:
        for batch in self.batches():
            yield from batch

    def _fetch(self, low: int, high: int) -> list[Operation]:
        if self.con is None:
            raise RuntimeError(f"plan of sync {self.sync_name!r} is closed")
        rows = self.con.execute(
            "SELECT op, record_key, fields_json, previous_json, op_id"
            f" FROM {self.table_sql} WHERE seq > ? AND seq <= ? ORDER BY seq",
            [low, high],
        ).fetchall()
        return list(map(Operation._make, rows))

    def close(self) -> None:
        """Drop a TEMP plan (a run's plan table is dropped when the run is folded)."""
        if self.con is not None:
            if self.table_sql.startswith("temp."):
                # if the connection is already closed, the temp table is gone with it
                with contextlib.suppress(duckdb.Error):
                    self.con.execute(f"DROP TABLE IF EXISTS {self.table_sql}")
            self.con = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fail(sync: SyncConfig, message: str) -> SyncError:
    return SyncError(f"sync {sync.name!r}: {message}", sync_name=sync.name)


def resolve_model(con: duckdb.DuckDBPyConnection, sync: SyncConfig) -> tuple[str, str]:
    """Return (schema, table) of the sync's model, or raise ``SyncError``."""
    if "." in sync.model:
        schema, name = sync.model.split(".", 1)
        rows = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_catalog = current_database()"
            " AND lower(table_schema) = lower(?) AND lower(table_name) = lower(?)",
            [schema, name],
        ).fetchall()
    else:
        rows = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_catalog = current_database() AND lower(table_name) = lower(?)"
            " AND lower(table_schema) NOT IN (SELECT unnest(?::VARCHAR[]))"
            " ORDER BY table_schema",
            [sync.model, list(EXCLUDED_SCHEMAS)],
        ).fetchall()
    if not rows:
        raise _fail(
            sync,
            f"model {sync.model!r} was not found in the warehouse: run the pipeline first "
            "(dbt build), or fix 'model' in syncs.yml",
        )
    if len(rows) > 1:
        found = ", ".join(f"{s}.{t}" for s, t in rows)
        raise _fail(
            sync,
            f"model {sync.model!r} is ambiguous (found {found}): qualify it as schema.table "
            "in syncs.yml",
        )
    return rows[0]


def _columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> dict[str, tuple[str, str]]:
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ?"
        " ORDER BY ordinal_position",
        [schema, table],
    ).fetchall()
    return {name.lower(): (name, data_type) for name, data_type in rows}


def _json_value(column_sql: str, data_type: str) -> str:
    """The column as rendered in the canonical fields JSON (hashed, stored, sent).

    Timestamps become ISO 8601 (TIMESTAMPTZ in UTC with a ``Z``, whatever the session
    TimeZone), NaN/Infinity become null (JSON has neither); other types use DuckDB's JSON
    rendering (DECIMAL as a number with its digits, DATE as ``YYYY-MM-DD``, nested types
    as JSON).
    """
    kind = data_type.upper()
    if kind == "TIMESTAMP WITH TIME ZONE":
        return f"strftime(timezone('UTC', {column_sql}), '%Y-%m-%dT%H:%M:%S.%fZ')"
    if kind == "TIMESTAMP_NS":
        return f"strftime({column_sql}, '%Y-%m-%dT%H:%M:%S.%n')"
    if kind in ("TIMESTAMP", "TIMESTAMP_MS", "TIMESTAMP_S"):
        return f"strftime(CAST({column_sql} AS TIMESTAMP), '%Y-%m-%dT%H:%M:%S.%f')"
    if kind in ("FLOAT", "DOUBLE"):
        return f"CASE WHEN isfinite({column_sql}) THEN {column_sql} END"
    return column_sql


def _consent_filter(
    sync: SyncConfig, columns: dict[str, tuple[str, str]], model_name: str, available: str
) -> str:
    if sync.consent is None:
        return "true"
    consent = sync.consent
    if consent.column.lower() not in columns:
        raise _fail(
            sync,
            f"'consent' names column {consent.column!r}, which model {model_name} does not "
            f"have: add it to the model or fix 'consent' in syncs.yml; its columns are: "
            f"{available}",
        )
    name, data_type = columns[consent.column.lower()]
    if data_type.upper() != "BOOLEAN":
        raise _fail(
            sync,
            f"'consent' column {name!r} of {model_name} is {data_type}, not BOOLEAN: consent "
            "must be a true/false column (cast it in the model)",
        )
    test = f"NOT {_ident(name)}" if consent.negated else _ident(name)
    return f"coalesce({test}, false)"  # NULL is not consent


def plan_sync(
    con: duckdb.DuckDBPyConnection, sync: SyncConfig, *, table: str | None = None
) -> SyncPlan:
    """Diff the model against the delivered state and return the plan (nothing is sent).

    The plan is a TEMP table, or the table ``reverse_etl.<table>`` when ``table`` is given
    (a run's plan, kept until the run is folded, even across a crash).
    """
    ensure_state_tables(con)
    schema, model_table = resolve_model(con, sync)
    model_sql = f"{_ident(schema)}.{_ident(model_table)}"
    model_name = f"{schema}.{model_table}"
    columns = _columns(con, schema, model_table)
    available = ", ".join(name for name, _ in columns.values())

    missing = [(f, c) for f, c in sync.fields.items() if c.lower() not in columns]
    if sync.primary_key.lower() not in columns:
        missing.insert(0, ("primary_key", sync.primary_key))
    if missing:
        described = ", ".join(
            f"{c!r} (primary_key)" if f == "primary_key" else f"{c!r} (for field {f!r})"
            for f, c in missing
        )
        raise _fail(
            sync,
            f"model {model_name} has no column {described}: fix 'fields'/'primary_key' in "
            f"syncs.yml or the model; its columns are: {available}",
        )
    consent = _consent_filter(sync, columns, model_name, available)

    pk_name, _ = columns[sync.primary_key.lower()]
    key_sql = f"CAST({_ident(pk_name)} AS VARCHAR)"
    nulls, dup_keys, dup_sample, dup_count = con.execute(
        f"""
        WITH keys AS (SELECT {key_sql} AS k FROM {model_sql} WHERE {consent}),
        dups AS (SELECT k, count(*) AS n FROM keys WHERE k IS NOT NULL GROUP BY k HAVING n > 1)
        SELECT (SELECT count(*) FROM keys WHERE k IS NULL),
               (SELECT count(*) FROM dups),
               (SELECT k FROM dups ORDER BY n DESC, k LIMIT 1),
               (SELECT max(n) FROM dups)
        """
    ).fetchone()
    if nulls:
        raise _fail(
            sync,
            f"model {model_name} has {nulls} row(s) with a NULL primary key {pk_name!r}: "
            "fix the model so every row has one, or choose another primary_key",
        )
    if dup_keys:
        raise _fail(
            sync,
            f"primary key {pk_name!r} is not unique in {model_name}: {dup_keys} key(s) appear "
            f"more than once (e.g. {dup_sample!r}, {dup_count} rows): fix the model or choose "
            "another primary_key",
        )

    mapped = {f: columns[c.lower()] for f, c in sync.fields.items()}
    json_args = ", ".join(
        f"{_literal(f)}, {_json_value(_ident(col), dtype)}" for f, (col, dtype) in mapped.items()
    )
    operations = MODE_OPERATIONS[sync.mode]
    op_case = " ".join(f"WHEN {_literal(k)} THEN {_literal(op)}" for k, op in operations.items())
    kinds = ", ".join(_literal(kind) for kind in operations)
    if table is None:
        plan_table = f"reverse_etl_plan_{uuid.uuid4().hex[:16]}"
        table_sql = f"temp.{_ident(plan_table)}"
    else:
        plan_table, table_sql = table, f"{STATE_SCHEMA}.{_ident(table)}"
    con.execute(
        f"""
        CREATE {"TEMP " if table is None else ""}TABLE {table_sql} AS
        WITH cur AS (
            SELECT *, md5(fields_json) AS row_hash
            FROM (
                SELECT {key_sql} AS record_key,
                       CAST(json_object({json_args}) AS VARCHAR) AS fields_json
                FROM {model_sql}
                WHERE {consent}
            )
        ),
        prev AS (
            SELECT record_key, row_hash, CAST(fields AS VARCHAR) AS fields
            FROM {STATE_SCHEMA}.sync_state WHERE sync_name = {_literal(sync.name)}
        ),
        diff AS (
            SELECT CASE WHEN prev.record_key IS NULL THEN 'added'
                        WHEN cur.record_key IS NULL THEN 'removed'
                        ELSE 'changed' END AS kind,
                   coalesce(cur.record_key, prev.record_key) AS record_key,
                   coalesce(cur.row_hash, prev.row_hash) AS row_hash,
                   coalesce(cur.fields_json, prev.fields) AS fields_json,
                   CASE WHEN cur.record_key IS NOT NULL THEN prev.fields END AS previous_json
            FROM cur FULL OUTER JOIN prev ON cur.record_key = prev.record_key
            WHERE prev.record_key IS NULL OR cur.record_key IS NULL
               OR prev.row_hash <> cur.row_hash
        ),
        ops AS (SELECT *, CASE kind {op_case} END AS op FROM diff WHERE kind IN ({kinds}))
        SELECT row_number() OVER (
                   ORDER BY CASE kind WHEN 'removed' THEN 1 ELSE 0 END, record_key
               ) AS seq,
               kind, op, record_key, row_hash,
               md5(concat_ws('|', {_literal(sync.name)}, op, record_key, row_hash)) AS op_id,
               fields_json, previous_json
        FROM ops
        ORDER BY seq
        """
    )
    plan = SyncPlan(
        sync_name=sync.name,
        model=model_name,
        mode=sync.mode,
        added=0,
        changed=0,
        removed=0,
        preview=[],
        table=plan_table,
        table_sql=table_sql,
        field_types={f: dtype for f, (_, dtype) in mapped.items()},
        con=con,
    )
    try:
        plan.added, plan.changed, plan.removed = con.execute(
            "SELECT count(*) FILTER (WHERE kind = 'added'),"
            " count(*) FILTER (WHERE kind = 'changed'),"
            f" count(*) FILTER (WHERE kind = 'removed') FROM {table_sql}"
        ).fetchone()
        plan.preview = plan._fetch(0, PREVIEW_LIMIT)
    except BaseException:
        if table is None:
            plan.close()
        raise
    return plan


# --------------------------------------------------------------------------- running


@dataclass
class SyncResult:
    run_id: str
    sync_name: str
    #: 'succeeded' | 'partial' (rows rejected) | 'failed' | 'dry_run'
    #: (in sync_runs also 'running' while it runs and 'interrupted' if the process died)
    status: str
    mode: str
    destination_type: str
    planned: int  # added + changed + removed (0 if the run failed before planning)
    added: int
    changed: int
    removed: int
    delivered: int  # operations the destination confirmed
    failed: int  # planned - delivered: rejected rows, and for a failed run what was not sent
    batches: int
    duration_seconds: float
    error: str | None
    output: str | None  # where the data went (file path, URL, table), None if nowhere
    started_at: datetime | None = None
    finished_at: datetime | None = None
    row_errors: list[RowResult] = field(default_factory=list)  # first ROW_ERRORS_KEPT
    preview: list[Operation] = field(default_factory=list)  # first operations planned
    plan_table: str | None = field(default=None, repr=False)  # until the run is folded


_RUN_COLUMNS = (
    "run_id",
    "sync_name",
    "started_at",
    "finished_at",
    "status",
    "mode",
    "destination_type",
    "planned",
    "added",
    "changed",
    "removed",
    "delivered",
    "failed",
    "batches",
    "duration_seconds",
    "error",
    "output",
    "plan_table",
)


def _save_run(con: duckdb.DuckDBPyConnection, result: SyncResult) -> None:
    """Insert or update the run's row in ``sync_runs`` (``pending_commit`` is left alone)."""
    values = [getattr(result, column) for column in _RUN_COLUMNS]
    exists = con.execute(
        f"SELECT count(*) FROM {STATE_SCHEMA}.sync_runs WHERE run_id = ?", [result.run_id]
    ).fetchone()[0]
    if exists:
        assignments = ", ".join(f"{column} = ?" for column in _RUN_COLUMNS[1:])
        con.execute(
            f"UPDATE {STATE_SCHEMA}.sync_runs SET {assignments} WHERE run_id = ?",
            [*values[1:], result.run_id],
        )
    else:
        con.execute(
            f"INSERT INTO {STATE_SCHEMA}.sync_runs ({', '.join(_RUN_COLUMNS)})"
            f" VALUES ({', '.join('?' for _ in _RUN_COLUMNS)})",
            values,
        )


@dataclass
class _Confirmation:
    """A batch the destination answered: its seq range and the rows it rejected."""

    number: int
    batch_id: str
    first_seq: int
    last_seq: int
    failures: list[tuple[str, str, str]]  # (key, operation, reason)


def _confirm(
    con: duckdb.DuckDBPyConnection,
    sync_name: str,
    run_id: str,
    confirmations: list[_Confirmation],
    pending_commit: str | None = None,
) -> None:
    """One transaction: journal answered batches (and their rejected rows)."""
    con.begin()
    try:
        for c in confirmations:
            if c.failures:
                keys, operations, reasons = map(list, zip(*c.failures))
                con.execute(
                    f"INSERT INTO {STATE_SCHEMA}.sync_row_errors SELECT ?, ?, ?,"
                    " unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), now()",
                    [sync_name, run_id, c.number, keys, operations, reasons],
                )
            con.execute(
                f"INSERT INTO {STATE_SCHEMA}.sync_batches VALUES (?, ?, ?, ?, ?, ?, ?, now())",
                [sync_name, run_id, c.number, c.batch_id, c.first_seq, c.last_seq, len(c.failures)],
            )
        if pending_commit is not None:
            con.execute(
                f"UPDATE {STATE_SCHEMA}.sync_runs SET pending_commit = ? WHERE run_id = ?",
                [pending_commit, run_id],
            )
        con.commit()
    except BaseException:
        con.rollback()
        raise


def _check_results(
    results: list[RowResult], batch: Batch, destination: Destination
) -> dict[str, str]:
    """The failed rows of a batch (key -> reason), after checking they belong to it."""
    if not isinstance(results, list | tuple):
        raise DestinationError(
            f"{type(destination).__name__}.write returned {type(results).__name__}, not a list"
            " of RowResult (destination bug)"
        )
    failures = {r.key: r.error or "rejected (no reason given)" for r in results if not r.ok}
    if failures:
        keys = {op.key for op in batch}
        unknown = [key for key in failures if key not in keys]
        if unknown:
            raise DestinationError(
                f"{type(destination).__name__} reported a result for a key that was not in "
                "the batch (destination bug)"
            )
    return failures


_ACTIVE: set[tuple[str, str]] = set()
_ACTIVE_LOCK = threading.Lock()


@contextlib.contextmanager
def _exclusive(con: duckdb.DuckDBPyConnection, sync: SyncConfig):
    """One run per sync at a time. DuckDB lets one process write a warehouse file, so
    other processes are excluded by the file lock; this guards threads of this process."""
    path = con.execute(
        "SELECT coalesce(path, 'memory') FROM duckdb_databases()"
        " WHERE database_name = current_database()"
    ).fetchone()[0]
    claim = (f"{path}#{id(con) if path == 'memory' else ''}", sync.name)
    with _ACTIVE_LOCK:
        if claim in _ACTIVE:
            raise _fail(sync, "is already running in this process: wait for it to finish")
        _ACTIVE.add(claim)
    try:
        yield
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.discard(claim)


def recover_interrupted_runs(con: duckdb.DuckDBPyConnection, sync: SyncConfig) -> int:
    """Close the runs of ``sync`` that did not finish; return how many there were.

    A file a run had prepared and recorded is published; the batches it confirmed are
    folded into the state; a run still ``running`` is marked ``interrupted``. What it had
    not confirmed is in the next plan. Nothing new is sent.
    """
    runs = con.execute(
        f"SELECT run_id, status, destination_type, pending_commit, plan_table"
        f" FROM {STATE_SCHEMA}.sync_runs WHERE sync_name = ?"
        " AND (status = 'running' OR pending_commit IS NOT NULL OR plan_table IS NOT NULL)"
        " ORDER BY started_at",
        [sync.name],
    ).fetchall()
    for run_id, status, destination_type, pending_commit, plan_table in runs:
        if pending_commit is not None:
            try:
                destination_class(destination_type).commit(pending_commit)
            except StagedDataLost as lost:
                # never published: forget its batches, so that its rows are sent again
                con.execute(f"DELETE FROM {STATE_SCHEMA}.sync_batches WHERE run_id = ?", [run_id])
                log.warning("sync %s: %s; its rows will be sent again", sync.name, lost)
        con.begin()
        try:
            delivered = _fold_run(con, sync.name, run_id, plan_table) if plan_table else None
            con.execute(
                f"UPDATE {STATE_SCHEMA}.sync_runs SET pending_commit = NULL, plan_table = NULL"
                " WHERE run_id = ?",
                [run_id],
            )
            if status == "running":
                con.execute(
                    f"UPDATE {STATE_SCHEMA}.sync_runs SET status = 'interrupted',"
                    " delivered = ?, failed = planned - ?, error = ? WHERE run_id = ?",
                    [
                        delivered or 0,
                        delivered or 0,
                        "the process stopped before the run finished; its confirmed batches "
                        "were kept and the rest was planned again by the next run",
                        run_id,
                    ],
                )
            con.commit()
        except BaseException:
            con.rollback()
            raise
        log.warning(
            "sync %s: closed interrupted run %s (%d operations kept)",
            sync.name,
            run_id,
            delivered or 0,
        )
    return len(runs)


def run_sync(
    con: duckdb.DuckDBPyConnection, sync: SyncConfig, *, base_dir: Path, dry_run: bool = False
) -> SyncResult:
    """Plan the sync and send the changes; return what happened (also in ``sync_runs``).

    ``base_dir`` is where relative destination paths resolve (the warehouse file's
    folder). ``dry_run=True`` only plans: nothing is sent, the run is logged with status
    ``dry_run`` (interrupted runs are closed first, which sends nothing). Raises
    ``SyncError`` if the run failed.
    """
    started_at = datetime.now(UTC)
    clock = time.perf_counter()
    result = SyncResult(
        run_id=uuid.uuid4().hex,
        sync_name=sync.name,
        status="failed",
        mode=sync.mode,
        destination_type=sync.destination.type,
        planned=0,
        added=0,
        changed=0,
        removed=0,
        delivered=0,
        failed=0,
        batches=0,
        duration_seconds=0.0,
        error=None,
        output=None,
        started_at=started_at,
    )

    def finish(status: str) -> SyncResult:
        result.status = status
        result.finished_at = datetime.now(UTC)
        result.duration_seconds = round(time.perf_counter() - clock, 6)
        if status != "dry_run":
            result.failed = result.planned - result.delivered
        return result

    def fold_and_save() -> None:
        """One transaction: the delivered part of the plan into the state, the run row."""
        con.begin()
        try:
            pending = con.execute(
                f"SELECT pending_commit FROM {STATE_SCHEMA}.sync_runs WHERE run_id = ?",
                [result.run_id],
            ).fetchone()
            # a file recorded but not published yet: recovery publishes it, then folds
            if result.plan_table is not None and not (pending and pending[0]):
                result.delivered = _fold_run(con, sync.name, result.run_id, result.plan_table)
                result.plan_table = None
            _save_run(con, finish(result.status))
            con.commit()
        except BaseException:
            con.rollback()
            raise

    plan: SyncPlan | None = None
    claimed = False
    try:
        ensure_state_tables(con)
        with _exclusive(con, sync):
            claimed = True
            recover_interrupted_runs(con, sync)
            if dry_run:
                plan = plan_sync(con, sync)
                _count(result, plan)
                _save_run(con, finish("dry_run"))
                return result
            con.begin()  # the plan table and the 'running' row appear together
            try:
                plan = plan_sync(con, sync, table=f"sync_plan_{result.run_id}")
                _count(result, plan)
                result.status, result.plan_table = "running", plan.table
                _save_run(con, result)
                con.commit()
            except BaseException:
                con.rollback()
                plan = None
                raise
            if plan.planned:
                _deliver(con, sync, plan, result, Path(base_dir))
            rejected = result.planned - result.delivered
            if rejected:
                first = result.row_errors[0].error if result.row_errors else ""
                result.error = redact(
                    f"{rejected} row(s) rejected by the destination, recorded in "
                    "reverse_etl.sync_row_errors and sent again next run "
                    f"(first reason: {first})"
                )
            result.status = "partial" if rejected else "succeeded"
            fold_and_save()
        log.info(
            "sync %s: %d planned (%d added, %d changed, %d removed), %d delivered, "
            "%d failed, %d batches, %.2fs",
            sync.name,
            result.planned,
            result.added,
            result.changed,
            result.removed,
            result.delivered,
            result.failed,
            result.batches,
            result.duration_seconds,
        )
        return result
    except BaseException as exc:
        if isinstance(exc, SyncError | DestinationError):
            reason = str(exc)
        else:
            reason = f"{type(exc).__name__}: {exc}"
        reason = redact(reason)
        result.error = reason
        result.status = "failed"
        try:
            if claimed:  # keep what this run confirmed before the failure
                fold_and_save()
            else:
                _save_run(con, finish("failed"))
        except Exception:  # e.g. connection broken: the next run recovers; the raise matters
            log.exception("sync %s: could not record the failed run", sync.name)
        if not isinstance(exc, Exception):
            raise
        if isinstance(exc, SyncError):
            exc.result = result
            raise
        raise SyncError(
            f"sync {sync.name!r} failed: {reason}", sync_name=sync.name, result=result
        ) from exc
    finally:
        if plan is not None:
            plan.close()


def _count(result: SyncResult, plan: SyncPlan) -> None:
    result.planned, result.added = plan.planned, plan.added
    result.changed, result.removed = plan.changed, plan.removed
    result.preview = plan.preview


def _deliver(
    con: duckdb.DuckDBPyConnection,
    sync: SyncConfig,
    plan: SyncPlan,
    result: SyncResult,
    base_dir: Path,
) -> None:
    """Send the plan batch by batch, journaling each answered batch."""
    context = SyncContext(
        sync_name=sync.name,
        run_id=result.run_id,
        base_dir=base_dir,
        field_names=tuple(sync.fields),
        key_field=sync.key_field,
        mode=sync.mode,
        field_types=plan.field_types,
        started_at=result.started_at or datetime.now(UTC),
    )
    destination = build_destination(sync.destination, context)
    # One sender thread: batch k is on the wire while the engine journals batch k-1 and
    # reads batch k+1 from DuckDB (both release the GIL). Batch k is only handed over once
    # batch k-1 was answered, so nothing is sent after a batch that failed.
    sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sync-{sync.name}")
    try:
        destination.check_connection()
        staged: list[_Confirmation] = []

        def record(confirmation: _Confirmation) -> None:
            if destination.delivers_on_commit:
                staged.append(confirmation)  # journaled once the file is prepared
            else:
                _confirm(con, sync.name, result.run_id, [confirmation])
            result.batches += 1
            result.delivered += confirmation.last_seq - confirmation.first_seq + 1
            result.delivered -= len(confirmation.failures)
            for key, _, reason in confirmation.failures:
                if len(result.row_errors) < ROW_ERRORS_KEPT:
                    result.row_errors.append(RowResult(key, False, reason))

        in_flight: tuple[Batch, Future] | None = None
        for batch in plan.batches(destination.batch_size):
            answered = _answered(*in_flight, destination) if in_flight else None
            in_flight = (batch, sender.submit(destination.write, batch))
            if answered is not None:
                record(answered)
        if in_flight is not None:
            record(_answered(*in_flight, destination))
        if destination.delivers_on_commit:
            token = destination.prepare()
            _confirm(con, sync.name, result.run_id, staged, pending_commit=token)
            if token is not None:
                type(destination).commit(token)
                con.execute(
                    f"UPDATE {STATE_SCHEMA}.sync_runs SET pending_commit = NULL WHERE run_id = ?",
                    [result.run_id],
                )
        result.output = destination.output
    finally:
        sender.shutdown(wait=True)  # let a batch on the wire finish before closing
        destination.close()


def _answered(batch: Batch, future: Future, destination: Destination) -> _Confirmation:
    """Wait for a batch's answer (raising its failure) and describe what to journal."""
    failures = _check_results(future.result(), batch, destination)
    first_seq = (batch.number - 1) * destination.batch_size + 1
    operation = {op.key: op.op for op in batch}
    return _Confirmation(
        batch.number,
        batch.id,
        first_seq,
        first_seq + len(batch) - 1,
        [(key, operation[key], reason) for key, reason in failures.items()],
    )
