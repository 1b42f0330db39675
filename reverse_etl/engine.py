"""The sync engine: diff a model against what was delivered, send the difference, keep score.

How a run works (``run_sync``):

1. **Recover.** A run of this sync that ended without finishing (process killed) is closed
   as ``interrupted``: a file it had prepared is published, and the batches it confirmed
   are folded into the state. Its unconfirmed rows are simply planned again below.
2. **Plan** (``plan_sync``). The model's mapped columns are rendered as canonical JSON
   (``json_object``; see ``_json_value``) keyed by ``CAST(primary_key AS VARCHAR)``,
   restricted to rows with consent, and hashed (md5). A FULL OUTER JOIN in DuckDB with the
   delivered state gives ``added`` (new key), ``changed`` (hash differs) and ``removed``
   (key gone); the sync's mode turns them into operations (``MODE_OPERATIONS``). The plan
   is a TEMP table: a snapshot that later changes to the model do not affect.
3. **Deliver.** Operations are read ``batch_size`` at a time (never the whole model in
   Python) and written. After each batch, one transaction records the delivered rows in
   the delivery journal (``sync_deliveries``), the rejected ones in ``sync_row_errors``
   and the batch in ``sync_batches``: a crash loses at most the batch in flight, and that
   batch is sent again with the same operation and batch ids, which destinations apply
   once (idempotent writes or deduplication by id). File destinations stage everything
   and are published after the journal records the run (two-phase; see ``base.py``).
4. **Finish.** One transaction folds the journal into ``sync_state`` and completes the
   run's row in ``sync_runs`` (status, counts, duration).

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
ROW_ERRORS_KEPT = 100

# No PRIMARY KEY on sync_state and sync_deliveries on purpose: DuckDB's ART index makes
# commits of large deletes very slow (11 s vs 0.6 s for 500k rows). The engine keeps
# (sync_name, record_key) unique itself: one operation per key per run, folded with
# delete-then-insert in one transaction.
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
    pending_commit VARCHAR
)""",
    f"""CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.sync_deliveries (
    sync_name VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    batch_no BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    operation VARCHAR NOT NULL,
    record_key VARCHAR NOT NULL,
    row_hash VARCHAR NOT NULL,
    fields JSON NOT NULL,
    delivered_at TIMESTAMPTZ NOT NULL
)""",
    f"""CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.sync_batches (
    sync_name VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    batch_no BIGINT NOT NULL,
    batch_id VARCHAR NOT NULL,
    operations BIGINT NOT NULL,
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
        " AND column_name = 'pending_commit'"
    ).fetchone()[0]
    if not has_new_columns:
        for statement in _RUNS_MIGRATION:
            con.execute(statement.format(t=f"{STATE_SCHEMA}.sync_runs"))


def _effective_state_sql(sync_name: str) -> str:
    """The delivered state of a sync: ``sync_state`` overlaid with the delivery journal."""
    name = _literal(sync_name)
    removing = ", ".join(_literal(op) for op in REMOVING_OPERATIONS)
    return f"""
        SELECT record_key, row_hash, CAST(fields AS VARCHAR) AS fields
        FROM {STATE_SCHEMA}.sync_state
        WHERE sync_name = {name} AND record_key NOT IN
            (SELECT record_key FROM {STATE_SCHEMA}.sync_deliveries WHERE sync_name = {name})
        UNION ALL
        SELECT record_key, row_hash, CAST(fields AS VARCHAR) AS fields FROM (
            SELECT * FROM {STATE_SCHEMA}.sync_deliveries WHERE sync_name = {name}
            QUALIFY row_number() OVER (
                PARTITION BY record_key ORDER BY delivered_at DESC, seq DESC) = 1
        ) WHERE operation NOT IN ({removing})
    """


def _fold_deliveries(con: duckdb.DuckDBPyConnection, sync_name: str) -> None:
    """Apply the delivery journal to ``sync_state`` and empty it (inside a transaction).

    Rows of a run whose staged file is not published yet (``pending_commit``) stay in the
    journal until recovery publishes it (or, if it vanished, forgets them to resend them).
    """
    name = _literal(sync_name)
    removing = ", ".join(_literal(op) for op in REMOVING_OPERATIONS)
    journal = (
        f"SELECT * FROM {STATE_SCHEMA}.sync_deliveries WHERE sync_name = {name}"
        f" AND run_id NOT IN (SELECT run_id FROM {STATE_SCHEMA}.sync_runs"
        f"  WHERE sync_name = {name} AND pending_commit IS NOT NULL)"
    )
    if not con.execute(f"SELECT count(*) FROM ({journal})").fetchone()[0]:
        return
    con.execute(
        f"DELETE FROM {STATE_SCHEMA}.sync_state WHERE sync_name = {name} AND record_key IN"
        f" (SELECT record_key FROM ({journal}))"
    )
    con.execute(
        f"INSERT INTO {STATE_SCHEMA}.sync_state"
        " (sync_name, record_key, row_hash, fields, synced_at)"
        f" SELECT sync_name, record_key, row_hash, fields, delivered_at FROM ({journal}"
        "   QUALIFY row_number() OVER ("
        "       PARTITION BY record_key ORDER BY delivered_at DESC, seq DESC) = 1"
        f") WHERE operation NOT IN ({removing})"
    )
    con.execute(
        f"DELETE FROM {STATE_SCHEMA}.sync_deliveries WHERE sync_name = {name}"
        f" AND run_id IN (SELECT DISTINCT run_id FROM ({journal}))"
    )


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
    table: str = field(repr=False)
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
        for number, low in enumerate(range(0, self.planned, size), start=1):
            operations = self._fetch(low, low + size)
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
            f" FROM {_ident(self.table)} WHERE seq > ? AND seq <= ? ORDER BY seq",
            [low, high],
        ).fetchall()
        return [Operation(*row) for row in rows]

    def close(self) -> None:
        if self.con is not None:
            # if the connection is already closed, the temp table is gone with it
            with contextlib.suppress(duckdb.Error):
                self.con.execute(f"DROP TABLE IF EXISTS temp.{_ident(self.table)}")
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


def plan_sync(con: duckdb.DuckDBPyConnection, sync: SyncConfig) -> SyncPlan:
    """Diff the model against the delivered state and return the plan (nothing is sent)."""
    ensure_state_tables(con)
    schema, table = resolve_model(con, sync)
    model_sql = f"{_ident(schema)}.{_ident(table)}"
    model_name = f"{schema}.{table}"
    columns = _columns(con, schema, table)
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
    plan_table = f"reverse_etl_plan_{uuid.uuid4().hex[:16]}"
    con.execute(
        f"""
        CREATE TEMP TABLE {_ident(plan_table)} AS
        WITH cur AS (
            SELECT *, md5(fields_json) AS row_hash
            FROM (
                SELECT {key_sql} AS record_key,
                       CAST(json_object({json_args}) AS VARCHAR) AS fields_json
                FROM {model_sql}
                WHERE {consent}
            )
        ),
        prev AS ({_effective_state_sql(sync.name)}),
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
        field_types={f: dtype for f, (_, dtype) in mapped.items()},
        con=con,
    )
    try:
        plan.added, plan.changed, plan.removed = con.execute(
            "SELECT count(*) FILTER (WHERE kind = 'added'),"
            " count(*) FILTER (WHERE kind = 'changed'),"
            f" count(*) FILTER (WHERE kind = 'removed') FROM {_ident(plan_table)}"
        ).fetchone()
        plan.preview = plan._fetch(0, PREVIEW_LIMIT)
    except BaseException:
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
    low: int  # seq > low
    high: int  # seq <= high
    failures: list[tuple[str, str, str]]  # (key, operation, reason)


def _confirm(
    con: duckdb.DuckDBPyConnection,
    plan: SyncPlan,
    run_id: str,
    confirmations: list[_Confirmation],
    pending_commit: str | None = None,
) -> None:
    """One transaction: journal the delivered rows, the rejected rows and the batches."""
    name = plan.sync_name
    con.begin()
    try:
        for c in confirmations:
            failed_keys = [key for key, _, _ in c.failures]
            con.execute(
                f"INSERT INTO {STATE_SCHEMA}.sync_deliveries SELECT ?, ?, ?, seq, op,"
                " record_key, row_hash, fields_json, now()"
                f" FROM {_ident(plan.table)} WHERE seq > ? AND seq <= ?"
                " AND record_key NOT IN (SELECT unnest(?::VARCHAR[]))",
                [name, run_id, c.number, c.low, c.high, failed_keys],
            )
            if c.failures:
                keys, operations, reasons = map(list, zip(*c.failures))
                con.execute(
                    f"INSERT INTO {STATE_SCHEMA}.sync_row_errors SELECT ?, ?, ?,"
                    " unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), now()",
                    [name, run_id, c.number, keys, operations, reasons],
                )
            con.execute(
                f"INSERT INTO {STATE_SCHEMA}.sync_batches VALUES (?, ?, ?, ?, ?, ?, now())",
                [name, run_id, c.number, c.batch_id, c.high - c.low, len(c.failures)],
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

    A prepared file is published, confirmed batches are folded into the state, the run is
    marked ``interrupted``. What it had not confirmed is in the next plan.
    """
    runs = con.execute(
        f"SELECT run_id, status, destination_type, pending_commit FROM {STATE_SCHEMA}.sync_runs"
        " WHERE sync_name = ? AND (status = 'running' OR pending_commit IS NOT NULL)"
        " ORDER BY started_at",
        [sync.name],
    ).fetchall()
    for run_id, status, destination_type, pending_commit in runs:
        if pending_commit is not None:
            try:
                destination_class(destination_type).commit(pending_commit)
            except StagedDataLost as lost:
                # the rows were never published: forget them so that they are sent again
                con.execute(
                    f"DELETE FROM {STATE_SCHEMA}.sync_deliveries WHERE run_id = ?", [run_id]
                )
                log.warning("sync %s: %s; its rows will be sent again", sync.name, lost)
            con.execute(
                f"UPDATE {STATE_SCHEMA}.sync_runs SET pending_commit = NULL WHERE run_id = ?",
                [run_id],
            )
        delivered = con.execute(
            f"SELECT count(*) FROM {STATE_SCHEMA}.sync_deliveries WHERE run_id = ?", [run_id]
        ).fetchone()[0]
        con.begin()
        try:
            _fold_deliveries(con, sync.name)
            if status == "running":
                con.execute(
                    f"UPDATE {STATE_SCHEMA}.sync_runs SET status = 'interrupted',"
                    " delivered = ?, failed = planned - ?, error = ? WHERE run_id = ?",
                    [
                        delivered,
                        delivered,
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
            "sync %s: closed interrupted run %s (%d rows kept)", sync.name, run_id, delivered
        )
    con.begin()
    try:
        _fold_deliveries(con, sync.name)  # e.g. a failed run that could not fold
        con.commit()
    except BaseException:
        con.rollback()
        raise
    return len(runs)


def run_sync(
    con: duckdb.DuckDBPyConnection, sync: SyncConfig, *, base_dir: Path, dry_run: bool = False
) -> SyncResult:
    """Plan the sync and send the changes; return what happened (also in ``sync_runs``).

    ``base_dir`` is where relative destination paths resolve (the warehouse file's
    folder). ``dry_run=True`` only plans: nothing is sent, state untouched, the run is
    logged with status ``dry_run``. Raises ``SyncError`` if the run failed.
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

    plan: SyncPlan | None = None
    claimed = False
    try:
        ensure_state_tables(con)
        with _exclusive(con, sync):
            claimed = True
            if not dry_run:
                recover_interrupted_runs(con, sync)
            plan = plan_sync(con, sync)
            result.planned, result.added = plan.planned, plan.added
            result.changed, result.removed = plan.changed, plan.removed
            result.preview = plan.preview
            if dry_run:
                _save_run(con, finish("dry_run"))
                return result
            result.status = "running"
            _save_run(con, result)
            if plan.planned:
                _deliver(con, sync, plan, result, Path(base_dir))
            if result.delivered < result.planned:
                first = result.row_errors[0].error if result.row_errors else ""
                result.error = redact(
                    f"{result.planned - result.delivered} row(s) rejected by the destination, "
                    "recorded in reverse_etl.sync_row_errors and sent again next run "
                    f"(first reason: {first})"
                )
            finish("partial" if result.delivered < result.planned else "succeeded")
            con.begin()
            try:
                _fold_deliveries(con, sync.name)
                _save_run(con, result)
                con.commit()
            except BaseException:
                con.rollback()
                raise
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
        try:
            finish("failed")
            con.begin()
            try:
                if claimed:  # keep what this run confirmed before the failure
                    _fold_deliveries(con, sync.name)
                _save_run(con, result)
                con.commit()
            except BaseException:
                con.rollback()
                raise
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


def _deliver(
    con: duckdb.DuckDBPyConnection,
    sync: SyncConfig,
    plan: SyncPlan,
    result: SyncResult,
    base_dir: Path,
) -> None:
    """Send the plan batch by batch, journaling each confirmed batch."""
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
    try:
        destination.check_connection()
        staged: list[_Confirmation] = []
        for batch in plan.batches(destination.batch_size):
            failures = _check_results(destination.write(batch), batch, destination)
            low = (batch.number - 1) * destination.batch_size
            operation = {op.key: op.op for op in batch}
            confirmation = _Confirmation(
                batch.number,
                batch.id,
                low,
                low + len(batch),
                [(key, operation[key], reason) for key, reason in failures.items()],
            )
            if destination.delivers_on_commit:
                staged.append(confirmation)
            else:
                _confirm(con, plan, result.run_id, [confirmation])
            result.batches += 1
            result.delivered += len(batch) - len(failures)
            for key, reason in failures.items():
                if len(result.row_errors) < ROW_ERRORS_KEPT:
                    result.row_errors.append(RowResult(key, False, reason))
        if destination.delivers_on_commit:
            token = destination.prepare()
            _confirm(con, plan, result.run_id, staged, pending_commit=token)
            if token is not None:
                type(destination).commit(token)
                con.execute(
                    f"UPDATE {STATE_SCHEMA}.sync_runs SET pending_commit = NULL WHERE run_id = ?",
                    [result.run_id],
                )
        result.output = destination.output
    except BaseException:
        if destination.delivers_on_commit:  # staged batches count only once recorded
            with contextlib.suppress(duckdb.Error):
                result.delivered = con.execute(
                    f"SELECT count(*) FROM {STATE_SCHEMA}.sync_deliveries WHERE run_id = ?",
                    [result.run_id],
                ).fetchone()[0]
        raise
    finally:
        destination.close()
