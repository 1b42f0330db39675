"""The sync engine: diff a model against what was delivered, send the difference.

How a run works (``run_sync``):

1. ``plan_sync`` finds the model's table, checks the mapped columns and the primary key,
   then computes the diff in DuckDB SQL into a TEMP table (one row per operation):
   current rows keyed by ``CAST(primary_key AS VARCHAR)`` with
   ``md5(json_object(<field>, <column>, ...))`` compared with ``reverse_etl.sync_state``
   for this sync -> ``added`` (new key), ``changed`` (hash differs), ``removed`` (key gone).
   That JSON (see ``_json_value``) is the canonical form of a row: it is what is hashed,
   what ``sync_state.fields`` keeps, and what JSON destinations may send verbatim
   (``Operation.fields_json``). Changing the mapping or a column's type therefore
   re-sends every row once.
   The temp table is a snapshot: later changes to the model do not affect the run.
2. Operations are read from the temp table ``destination.batch_size`` at a time (never
   the whole model in Python) and written to the destination.
3. After ``destination.close(True)``, one transaction records the delivered rows in
   ``sync_state`` (rows the destination reported as failed are left out, so they are
   planned again next run) and appends the run to ``sync_runs``.
4. If anything raises: ``destination.close(False)``, state untouched, the run is logged
   as ``failed`` and ``SyncError`` is raised.

Delivery is at-least-once (see ``destinations/base.py``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Self

import duckdb

from reverse_etl.config import SyncConfig
from reverse_etl.destinations import (
    Destination,
    DestinationError,
    Operation,
    RowResult,
    build_destination,
)

log = logging.getLogger(__name__)

STATE_SCHEMA = "reverse_etl"
#: Schemas never searched for an unqualified model name.
EXCLUDED_SCHEMAS = ("raw", STATE_SCHEMA, "information_schema", "pg_catalog")
PREVIEW_LIMIT = 20
ROW_ERRORS_KEPT = 100

# No PRIMARY KEY on sync_state on purpose: DuckDB's ART index makes commits of large
# deletes very slow (11 s vs 0.6 s for 500k rows). The engine keeps (sync_name,
# record_key) unique itself: it deletes then inserts in one transaction.
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
    finished_at TIMESTAMPTZ NOT NULL,
    status VARCHAR NOT NULL,
    planned BIGINT,
    added BIGINT,
    changed BIGINT,
    removed BIGINT,
    failed BIGINT,
    duration_seconds DOUBLE NOT NULL,
    error VARCHAR
)""",
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
    """Create the ``reverse_etl`` schema, ``sync_state`` and ``sync_runs`` if missing."""
    for statement in STATE_DDL:
        con.execute(statement)


def _state_exists(con: duckdb.DuckDBPyConnection) -> bool:
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database()"
        " AND table_schema = ? AND table_name = 'sync_state'",
        [STATE_SCHEMA],
    ).fetchone()
    return bool(row and row[0])


# --------------------------------------------------------------------------- planning


@dataclass
class SyncPlan:
    """What a run would send. The operations live in a DuckDB TEMP table of the
    connection (``table``); read them with ``batches()`` and ``close()`` the plan (or use
    it as a context manager) to drop that table. ``preview`` holds the first operations.
    """

    sync_name: str
    model: str  # resolved as schema.table
    added: int
    changed: int
    removed: int
    preview: list[Operation]
    table: str = field(repr=False)
    field_names: tuple[str, ...] = field(repr=False)
    con: duckdb.DuckDBPyConnection | None = field(repr=False, default=None)

    @property
    def planned(self) -> int:
        return self.added + self.changed + self.removed

    def batches(self, size: int = 10_000) -> Iterator[list[Operation]]:
        """Yield the operations in order (upserts by key, then deletes), ``size`` at a time."""
        if size < 1:
            raise ValueError("batch size must be at least 1")
        for low in range(0, self.planned, size):
            yield self._fetch(low, low + size)

    def operations(self) -> Iterator[Operation]:
        for batch in self.batches():
            yield from batch

    def _fetch(self, low: int, high: int) -> list[Operation]:
        if self.con is None:
            raise RuntimeError(f"plan of sync {self.sync_name!r} is closed")
        values = ", ".join(f"c{i}" for i in range(len(self.field_names)))
        rows = self.con.execute(
            f"SELECT kind, record_key, CAST(fields_json AS VARCHAR), {values}"
            f" FROM {_ident(self.table)} WHERE seq > ? AND seq <= ? ORDER BY seq",
            [low, high],
        ).fetchall()
        names = self.field_names
        ops = []
        for kind, key, fields_json, *current in rows:
            if kind == "removed":
                fields = json.loads(fields_json, parse_float=Decimal)
                ops.append(Operation("delete", key, fields, fields_json))
            else:
                fields = dict(zip(names, current))  # same length by construction
                ops.append(Operation("upsert", key, fields, fields_json))
        return ops

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
    rendering (DECIMAL as a number, DATE as ``YYYY-MM-DD``, nested types as JSON).
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


def plan_sync(con: duckdb.DuckDBPyConnection, sync: SyncConfig) -> SyncPlan:
    """Diff the model against ``sync_state`` and return the plan (nothing is sent)."""
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

    pk_name, _ = columns[sync.primary_key.lower()]
    key_sql = f"CAST({_ident(pk_name)} AS VARCHAR)"
    nulls, dup_keys, dup_sample, dup_count = con.execute(
        f"""
        WITH keys AS (SELECT {key_sql} AS k FROM {model_sql}),
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

    names = tuple(sync.fields)
    mapped = [columns[c.lower()] for c in sync.fields.values()]
    json_args = ", ".join(
        f"{_literal(f)}, {_json_value(_ident(col), dtype)}"
        for f, (col, dtype) in zip(names, mapped, strict=True)
    )
    current_values = ", ".join(f"{_ident(col)} AS c{i}" for i, (col, _) in enumerate(mapped))
    diff_values = ", ".join(f"cur.c{i}" for i in range(len(mapped)))
    if _state_exists(con):
        previous = (
            f"SELECT record_key, row_hash, fields FROM {STATE_SCHEMA}.sync_state"
            f" WHERE sync_name = {_literal(sync.name)}"
        )
    else:
        previous = "SELECT NULL::VARCHAR AS record_key, NULL AS row_hash, NULL::JSON AS fields"
        previous += " WHERE false"

    plan_table = f"reverse_etl_plan_{uuid.uuid4().hex[:16]}"
    con.execute(
        f"""
        CREATE TEMP TABLE {_ident(plan_table)} AS
        WITH cur AS (
            SELECT *, md5(CAST(fields_json AS VARCHAR)) AS row_hash
            FROM (
                SELECT {key_sql} AS record_key, json_object({json_args}) AS fields_json,
                       {current_values}
                FROM {model_sql}
            )
        ),
        prev AS ({previous}),
        diff AS (
            SELECT CASE WHEN prev.record_key IS NULL THEN 'added'
                        WHEN cur.record_key IS NULL THEN 'removed'
                        ELSE 'changed' END AS kind,
                   coalesce(cur.record_key, prev.record_key) AS record_key,
                   cur.row_hash,
                   coalesce(cur.fields_json, prev.fields) AS fields_json,
                   {diff_values}
            FROM cur FULL OUTER JOIN prev ON cur.record_key = prev.record_key
            WHERE prev.record_key IS NULL OR cur.record_key IS NULL
               OR prev.row_hash IS DISTINCT FROM cur.row_hash
        )
        SELECT row_number() OVER (
                   ORDER BY CASE kind WHEN 'removed' THEN 1 ELSE 0 END, record_key
               ) AS seq, *
        FROM diff
        ORDER BY seq
        """
    )
    plan = SyncPlan(
        sync_name=sync.name,
        model=model_name,
        added=0,
        changed=0,
        removed=0,
        preview=[],
        table=plan_table,
        field_names=names,
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
    status: str  # 'succeeded' | 'failed' | 'dry_run'
    planned: int  # added + changed + removed (0 if the run failed before planning)
    added: int
    changed: int
    removed: int
    failed: int  # rows the destination rejected; for a failed run: every planned row
    duration_seconds: float
    error: str | None
    output: str | None  # where the data went (file path), None if nothing was written
    started_at: datetime | None = None
    finished_at: datetime | None = None
    row_errors: list[RowResult] = field(default_factory=list)  # first ROW_ERRORS_KEPT
    preview: list[Operation] = field(default_factory=list)  # first operations planned


def _log_run(con: duckdb.DuckDBPyConnection, result: SyncResult) -> None:
    con.execute(
        f"INSERT INTO {STATE_SCHEMA}.sync_runs (run_id, sync_name, started_at, finished_at,"
        " status, planned, added, changed, removed, failed, duration_seconds, error)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            result.run_id,
            result.sync_name,
            result.started_at,
            result.finished_at,
            result.status,
            result.planned,
            result.added,
            result.changed,
            result.removed,
            result.failed,
            result.duration_seconds,
            result.error,
        ],
    )


def _record_delivery(
    con: duckdb.DuckDBPyConnection, plan: SyncPlan, failed_keys: list[str], result: SyncResult
) -> None:
    """In one transaction: apply the delivered operations to sync_state, log the run."""
    plan_sql = _ident(plan.table)
    name = _literal(plan.sync_name)
    con.begin()
    try:
        if failed_keys:
            con.execute("CREATE OR REPLACE TEMP TABLE reverse_etl_failed_keys (record_key VARCHAR)")
            con.execute(
                "INSERT INTO reverse_etl_failed_keys SELECT unnest(?::VARCHAR[])", [failed_keys]
            )
            delivered = (
                f"SELECT * FROM {plan_sql} WHERE record_key NOT IN"
                " (SELECT record_key FROM reverse_etl_failed_keys)"
            )
        else:
            delivered = f"SELECT * FROM {plan_sql}"
        con.execute(
            f"DELETE FROM {STATE_SCHEMA}.sync_state WHERE sync_name = {name} AND record_key IN"
            f" (SELECT record_key FROM ({delivered}) WHERE kind <> 'added')"
        )
        con.execute(
            f"INSERT INTO {STATE_SCHEMA}.sync_state"
            " (sync_name, record_key, row_hash, fields, synced_at)"
            f" SELECT {name}, record_key, row_hash, fields_json, ?"
            f" FROM ({delivered}) WHERE kind <> 'removed'",
            [result.finished_at],
        )
        if failed_keys:
            con.execute("DROP TABLE temp.reverse_etl_failed_keys")
        _log_run(con, result)
        con.commit()
    except BaseException:
        con.rollback()
        raise


def _check_results(
    results: list[RowResult], batch: list[Operation], destination: Destination
) -> list[RowResult]:
    """Return the failed results, after checking they refer to operations of the batch."""
    if not isinstance(results, list | tuple):
        raise DestinationError(
            f"{type(destination).__name__}.write returned {type(results).__name__}, not a list"
            " of RowResult (destination bug)"
        )
    failures = [r for r in results if not r.ok]
    if failures:
        keys = {op.key for op in batch}
        unknown = [r.key for r in failures if r.key not in keys]
        if unknown:
            raise DestinationError(
                f"{type(destination).__name__} reported a result for key {unknown[0]!r}, "
                "which was not in the batch (destination bug)"
            )
    return failures


def run_sync(
    con: duckdb.DuckDBPyConnection, sync: SyncConfig, *, base_dir: Path, dry_run: bool = False
) -> SyncResult:
    """Plan the sync and send the changes; return what happened (also in ``sync_runs``).

    ``base_dir`` is where relative destination paths resolve (the warehouse file's
    folder). ``dry_run=True`` only plans: nothing is sent, state untouched, the run is
    logged with status ``dry_run``. Raises ``SyncError`` if the run failed.
    """
    run_id = uuid.uuid4().hex
    started_at = datetime.now(UTC)
    clock = time.perf_counter()
    result = SyncResult(
        run_id=run_id,
        sync_name=sync.name,
        status="failed",
        planned=0,
        added=0,
        changed=0,
        removed=0,
        failed=0,
        duration_seconds=0.0,
        error=None,
        output=None,
        started_at=started_at,
    )

    def finish(status: str) -> SyncResult:
        result.status = status
        result.finished_at = datetime.now(UTC)
        result.duration_seconds = round(time.perf_counter() - clock, 6)
        return result

    plan: SyncPlan | None = None
    destination: Destination | None = None
    closed = False
    try:
        ensure_state_tables(con)
        plan = plan_sync(con, sync)
        result.planned, result.added = plan.planned, plan.added
        result.changed, result.removed = plan.changed, plan.removed
        result.preview = plan.preview
        if dry_run:
            _log_run(con, finish("dry_run"))
            return result

        destination = build_destination(
            sync.destination,
            sync_name=sync.name,
            run_id=run_id,
            base_dir=Path(base_dir),
            field_names=tuple(sync.fields),
            key_field=sync.key_field,
            started_at=started_at,
        )
        destination.check_connection()
        failed_keys: list[str] = []
        for batch in plan.batches(destination.batch_size):
            failures = _check_results(destination.write(batch), batch, destination)
            for failure in failures:
                failed_keys.append(failure.key)
                if len(result.row_errors) < ROW_ERRORS_KEPT:
                    result.row_errors.append(failure)
        destination.close(True)
        closed = True
        result.output = destination.output
        failed_keys = list(dict.fromkeys(failed_keys))
        result.failed = len(failed_keys)
        if failed_keys:
            first = result.row_errors[0]
            result.error = (
                f"{len(failed_keys)} row(s) rejected by the destination, will retry next run"
                f" (first: key {first.key!r}: {first.error or 'no reason given'})"
            )
        _record_delivery(con, plan, failed_keys, finish("succeeded"))
        log.info(
            "sync %s: %d planned (%d added, %d changed, %d removed), %d failed, %.2fs",
            sync.name,
            result.planned,
            result.added,
            result.changed,
            result.removed,
            result.failed,
            result.duration_seconds,
        )
        return result
    except BaseException as exc:
        if destination is not None and not closed:
            try:
                destination.close(False)
            except Exception:  # already failing: keep the original error
                log.exception("sync %s: destination.close(False) failed", sync.name)
        if isinstance(exc, SyncError | DestinationError):
            reason = str(exc)
        else:
            reason = f"{type(exc).__name__}: {exc}"
        if closed:
            reason += (
                " (the destination received the data but the state was not recorded:"
                " the next run sends these changes again)"
            )
        result.error = reason
        result.output = destination.output if destination is not None and closed else None
        result.failed = result.planned  # nothing of this run is recorded: all will be retried
        try:
            _log_run(con, finish("failed"))
        except Exception:  # e.g. connection broken: the raise below matters
            log.exception("sync %s: could not log the failed run", sync.name)
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
