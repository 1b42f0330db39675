"""PostgreSQL table: upserts, updates, inserts and deletes by primary key.

Settings: ``dsn_env`` (the environment variable holding a libpq connection string, e.g.
``postgresql://user:password@host:5432/db``) and ``table`` (``schema.table``, default
schema ``public``). The table is created if missing: one column per destination field,
typed after the model column (DECIMAL -> numeric, TIMESTAMPTZ -> timestamptz, lists and
structs -> jsonb, ...), the primary key on the field that carries the sync's primary key,
and two bookkeeping columns: ``_cdp_created_by_sync`` (the sync that inserted the row;
NULL for rows it did not create) and ``_cdp_synced_at``. An existing table gains missing
columns; it needs a primary key or unique index on the key column.

Each batch is one transaction: the operations are copied (``COPY``) into a temporary
table and applied with set-based statements (``jsonb_populate_record`` casts the JSON to
the table's column types). Modes: ``upsert`` (insert or update), ``update`` (existing rows
only; a missing row fails), ``insert`` (new rows only; existing rows are left alone),
``mirror`` (upsert, and delete rows that left the model, but only rows this sync created:
``_cdp_created_by_sync`` = the sync's name; rows it merely updated stay). Re-applying a
batch (a retry after a lost connection, a re-run after a crash) changes nothing more.

A value PostgreSQL refuses (a text that is not a number, a NOT NULL violation) fails only
its row: the batch is split until the rejected rows are isolated. Lost connections,
timeouts, serialization failures and deadlocks are retried with backoff.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from reverse_etl.destinations.base import (
    NETWORK_SETTINGS,
    Batch,
    Destination,
    DestinationError,
    Operation,
    RowResult,
    Setting,
    SyncContext,
)
from reverse_etl.destinations.retry import (
    RetryPolicy,
    TransientError,
    shared_rate_limiter,
    with_retries,
)
from reverse_etl.pii import redact

CREATED_BY = "_cdp_created_by_sync"
SYNCED_AT = "_cdp_synced_at"
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")
_SIMPLE_TYPES = {
    "BOOLEAN": "boolean",
    "TINYINT": "smallint",
    "UTINYINT": "smallint",
    "SMALLINT": "smallint",
    "USMALLINT": "integer",
    "INTEGER": "integer",
    "UINTEGER": "bigint",
    "BIGINT": "bigint",
    "UBIGINT": "numeric",
    "HUGEINT": "numeric",
    "UHUGEINT": "numeric",
    "FLOAT": "real",
    "DOUBLE": "double precision",
    "VARCHAR": "text",
    "DATE": "date",
    "TIME": "time",
    "TIMESTAMP": "timestamp",
    "TIMESTAMP_S": "timestamp",
    "TIMESTAMP_MS": "timestamp",
    "TIMESTAMP_NS": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "UUID": "uuid",
    "INTERVAL": "interval",
    "JSON": "jsonb",
}


def postgres_type(duckdb_type: str) -> str:
    """The PostgreSQL column type for a DuckDB column type."""
    kind = duckdb_type.upper().strip()
    if kind in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[kind]
    decimal = re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", kind)
    if decimal:
        return f"numeric({decimal.group(1)},{decimal.group(2)})"
    if kind.endswith("]") or kind.startswith(("STRUCT", "MAP", "UNION")):
        return "jsonb"
    return "text"


def _transient(error: psycopg.Error) -> bool:
    return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)


class PostgresDestination(Destination):
    modes = ("mirror", "upsert", "update", "insert")
    default_batch_size = 5_000
    max_batch_size = 100_000
    settings_spec: ClassVar[Mapping[str, Setting]] = {
        "dsn_env": Setting(
            "the environment variable holding the connection string", "env", required=True
        ),
        "table": Setting("the table to write, as schema.table or table", required=True),
        **NETWORK_SETTINGS,
    }

    @classmethod
    def validate_settings(
        cls, settings: Mapping[str, Any], field_names: Sequence[str], mode: str | None
    ) -> list[str]:
        problems = super().validate_settings(settings, field_names, mode)
        table = settings.get("table")
        if isinstance(table, str) and table and not _TABLE.match(table):
            problems.append(
                f"'destination.table' {table!r} is not a plain table name: use schema.table "
                "with letters, digits and '_'"
            )
        for name in field_names:
            if name in (CREATED_BY, SYNCED_AT):
                problems.append(f"field {name!r} is a bookkeeping column of the table: rename it")
        return problems

    def __init__(self, settings: Mapping[str, Any], context: SyncContext) -> None:
        super().__init__(settings, context)
        self.dsn = self.secret("dsn_env")
        schema, _, table = self.settings["table"].rpartition(".")
        self.schema, self.table = schema or "public", table
        self.timeout: float = self.settings["timeout_seconds"]
        self.policy = RetryPolicy.from_settings(self.settings)
        info = conninfo_to_dict(self.dsn.reveal())
        self.where = (
            f"postgresql://{info.get('host') or 'localhost'}:{info.get('port') or 5432}"
            f"/{info.get('dbname') or ''}"
        )
        self.limiter = shared_rate_limiter(self.where, self.settings["rate_limit_per_second"])
        self._connection: psycopg.Connection | None = None
        self.key_column = context.key_field or ""
        self.key_type = "text"
        self.columns: tuple[str, ...] = context.field_names

    @property
    def output(self) -> str | None:
        return f"{self.where} table {self.schema}.{self.table}"

    @property
    def _table(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.table)

    # ------------------------------------------------------------------ connection

    def _connect(self) -> psycopg.Connection:
        if self._connection is None or self._connection.closed:
            timeout_ms = int(self.timeout * 1000)
            self._connection = psycopg.connect(
                self.dsn.reveal(),
                connect_timeout=max(1, round(self.timeout)),
                options=f"-c statement_timeout={timeout_ms}",
                application_name="warehouse-cdp-reverse-etl",
            )
        return self._connection

    def _drop_connection(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            finally:
                self._connection = None

    def _with_retries(self, action, what: str):
        def attempt():
            try:
                return action(self._connect())
            except psycopg.Error as error:
                if _transient(error):
                    self._drop_connection()
                    raise TransientError(redact(str(error).strip())) from error
                if self._connection is not None and not self._connection.closed:
                    self._connection.rollback()
                raise DestinationError(
                    f"PostgreSQL sync {self.context.sync_name!r} ({self.output}): {what}: "
                    f"{redact(str(error).strip())}"
                ) from error

        return with_retries(
            attempt,
            policy=self.policy,
            what=f"PostgreSQL sync {self.context.sync_name!r} ({self.output}): {what}",
            limiter=self.limiter,
        )

    def close(self) -> None:
        self._drop_connection()

    # ------------------------------------------------------------------ table

    def check_connection(self) -> None:
        self._with_retries(self._ensure_table, "preparing the table")

    def _ensure_table(self, connection: psycopg.Connection) -> None:
        if not self.key_column:
            raise DestinationError("PostgreSQL destination needs the sync's key field")
        types = {
            name: postgres_type(self.context.field_types.get(name, "VARCHAR"))
            for name in self.columns
        }
        with connection.transaction():
            connection.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            definitions = [
                sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(types[name]))
                for name in self.columns
            ]
            connection.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} ({}, {} text, {} timestamptz, PRIMARY KEY ({}))"
                ).format(
                    self._table,
                    sql.SQL(", ").join(definitions),
                    sql.Identifier(CREATED_BY),
                    sql.Identifier(SYNCED_AT),
                    sql.Identifier(self.key_column),
                )
            )
            for name, kind in [*types.items(), (CREATED_BY, "text"), (SYNCED_AT, "timestamptz")]:
                connection.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                        self._table, sql.Identifier(name), sql.SQL(kind)
                    )
                )
            row = connection.execute(
                """
                SELECT format_type(a.atttypid, a.atttypmod),
                       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid
                               AND i.indisunique AND i.indnatts = 1 AND i.indkey[0] = a.attnum)
                FROM pg_attribute a
                WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped
                """,
                [sql.Identifier(self.schema, self.table).as_string(connection), self.key_column],
            ).fetchone()
        if row is None or not row[1]:
            raise DestinationError(
                f"table {self.schema}.{self.table} has no primary key or unique index on "
                f"{self.key_column!r}, which upserts and deletes need: add one "
                f"(ALTER TABLE {self.schema}.{self.table} ADD PRIMARY KEY ({self.key_column}))"
            )
        self.key_type = row[0]

    # ------------------------------------------------------------------ writing

    def write(self, batch: Batch) -> list[RowResult]:
        if not batch.operations:
            return []
        return self._with_retries(
            lambda connection: self._apply_batch(connection, batch.operations),
            f"batch {batch.number}",
        )

    def _apply_batch(
        self, connection: psycopg.Connection, operations: list[Operation]
    ) -> list[RowResult]:
        with connection.transaction():
            connection.execute(
                "CREATE TEMP TABLE IF NOT EXISTS _cdp_stage"
                " (seq integer, op text, k text, f jsonb) ON COMMIT DELETE ROWS"
            )
            with connection.cursor().copy("COPY _cdp_stage (seq, op, k, f) FROM STDIN") as copy:
                for seq, op in enumerate(operations):
                    copy.write_row((seq, op.op, op.key, op.fields_json))
            return self._apply_range(connection, operations, 0, len(operations))

    def _apply_range(
        self, connection: psycopg.Connection, operations: list[Operation], low: int, high: int
    ) -> list[RowResult]:
        """Apply staged rows ``low <= seq < high``; split the range when a value is refused."""
        try:
            with connection.transaction():  # a savepoint
                return self._statements(connection, operations, low, high)
        except (psycopg.DataError, psycopg.IntegrityError) as error:
            if high - low == 1:
                return [RowResult(operations[low].key, False, f"PostgreSQL: {error}".strip())]
            middle = (low + high) // 2
            return self._apply_range(connection, operations, low, middle) + self._apply_range(
                connection, operations, middle, high
            )

    def _statements(
        self, connection: psycopg.Connection, operations: list[Operation], low: int, high: int
    ) -> list[RowResult]:
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in self.columns)
        values = sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(c)) for c in self.columns)
        key = sql.Identifier(self.key_column)
        staged = sql.SQL(
            "FROM _cdp_stage s, jsonb_populate_record(NULL::{table}, s.f) r"
            " WHERE s.seq >= {low} AND s.seq < {high} AND s.op = {op}"
        )
        params = {"table": self._table, "low": sql.Literal(low), "high": sql.Literal(high)}
        kinds = {op.op for op in operations[low:high]}
        failures: list[RowResult] = []
        if kinds & {"upsert", "insert"}:
            updates = sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
                for c in (*self.columns, SYNCED_AT)
                if c != self.key_column
            )
            for op, conflict in (
                ("upsert", sql.SQL("DO UPDATE SET {}").format(updates)),
                ("insert", sql.SQL("DO NOTHING")),
            ):
                if op in kinds:
                    connection.execute(
                        sql.SQL(
                            "INSERT INTO {table} ({columns}, {created}, {synced})"
                            " SELECT {values}, {sync}, now() {staged}"
                            " ON CONFLICT ({key}) {conflict}"
                        ).format(
                            table=self._table,
                            columns=columns,
                            created=sql.Identifier(CREATED_BY),
                            synced=sql.Identifier(SYNCED_AT),
                            values=values,
                            sync=sql.Literal(self.context.sync_name),
                            staged=staged.format(**params, op=sql.Literal(op)),
                            key=key,
                            conflict=conflict,
                        )
                    )
        if "update" in kinds:
            assignments = sql.SQL(", ").join(
                [
                    *(
                        sql.SQL("{0} = r.{0}").format(sql.Identifier(c))
                        for c in self.columns
                        if c != self.key_column
                    ),
                    sql.SQL("{} = now()").format(sql.Identifier(SYNCED_AT)),
                ]
            )
            updated = connection.execute(
                sql.SQL(
                    "UPDATE {table} AS d SET {assignments} {staged} AND d.{key} = r.{key}"
                    " RETURNING s.k"
                ).format(
                    table=self._table,
                    assignments=assignments,
                    staged=staged.format(**params, op=sql.Literal("update")),
                    key=key,
                )
            ).fetchall()
            done = {k for (k,) in updated}
            failures.extend(
                RowResult(
                    op.key,
                    False,
                    f"no row with this {self.key_column} in {self.schema}.{self.table}: "
                    "mode 'update' only changes existing rows",
                )
                for op in operations[low:high]
                if op.op == "update" and op.key not in done
            )
        if "delete" in kinds:
            connection.execute(
                sql.SQL(
                    "DELETE FROM {table} AS d USING _cdp_stage s"
                    " WHERE s.seq >= {low} AND s.seq < {high} AND s.op = 'delete'"
                    " AND d.{key} = CAST(s.k AS {key_type}) AND d.{created} = {sync}"
                ).format(
                    **params,
                    key=key,
                    key_type=sql.SQL(self.key_type),
                    created=sql.Identifier(CREATED_BY),
                    sync=sql.Literal(self.context.sync_name),
                )
            )
        return failures
