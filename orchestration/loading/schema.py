"""The ``raw`` schema: its tables, their columns, and the DDL that creates them."""

from __future__ import annotations

import duckdb

FILE_KINDS = ("contacts", "companies", "deals", "tickets", "events")
CRM_KINDS = FILE_KINDS[:4]
RAW_TABLES = {
    "contacts": "raw.crm_contacts",
    "companies": "raw.crm_companies",
    "deals": "raw.crm_deals",
    "tickets": "raw.crm_tickets",
    "events": "raw.events",
}
MESSAGE_TYPES = ("identify", "track", "page", "screen", "alias", "group")
MESSAGE_TYPES_SQL = ", ".join(f"'{t}'" for t in MESSAGE_TYPES)  # for SQL: type IN (...)

# The columns of raw.crm_<kind> besides record_id and attributes: HubSpot's export headers,
# snake-cased. The dbt staging models read them; a CRM mapping (orchestration/crm_mappings,
# crm/mapping.yml) says which header of an export fills which column. Every other header
# goes to the row's `attributes` JSON object.
CRM_COLUMNS = {
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
# CRM columns whose values must be empty or a parseable timestamp (else the row is rejected).
CRM_TIMESTAMP_COLUMNS = frozenset({"create_date", "last_activity_date", "close_date"})

_META_DDL = (
    "_source_file VARCHAR NOT NULL, _source_line BIGINT NOT NULL, _loaded_at TIMESTAMPTZ NOT NULL"
)
# An event's JSON objects are most of its bytes. DuckDB would store them with its dictionary
# and FSST compression (it considers ZSTD only for strings of 4,096 bytes or more on average,
# setting zstd_min_string_length). With ZSTD, six event files at a million customers (1.5M
# events) loaded in 6.8-7.4 s against 8.0-8.6 s (12.2-13.5 s CPU against 14.5-15.6 s), into
# 179 MB against 271 MB; staging them from scratch took 2-5% longer (decompressing). ZSTD for
# the id columns too made the table larger (247 MB) and staging 20% slower. A table made
# before keeps the compression it was made with.
_JSON_DDL = "JSON USING COMPRESSION zstd"
SCHEMA_DDL = (
    "CREATE SCHEMA IF NOT EXISTS raw",
    *(
        f"CREATE TABLE IF NOT EXISTS {RAW_TABLES[kind]} ({_META_DDL}, record_id VARCHAR NOT NULL)"
        for kind in CRM_KINDS
    ),
    (
        "CREATE TABLE IF NOT EXISTS raw.events ("
        "message_id VARCHAR NOT NULL, type VARCHAR NOT NULL, event VARCHAR, name VARCHAR, "
        "user_id VARCHAR, anonymous_id VARCHAR, previous_id VARCHAR, group_id VARCHAR, "
        "event_at TIMESTAMPTZ NOT NULL, received_at TIMESTAMPTZ, "
        f"traits {_JSON_DDL}, properties {_JSON_DDL}, context {_JSON_DDL}, {_META_DDL})"
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
# Columns added after the first version; ADD COLUMN IF NOT EXISTS upgrades older warehouses.
ADDED_COLUMNS = (
    *((RAW_TABLES[kind], column, "VARCHAR") for kind in CRM_KINDS for column in CRM_COLUMNS[kind]),
    *((RAW_TABLES[kind], "attributes", "JSON") for kind in CRM_KINDS),
    ("raw.events", "sent_at", "TIMESTAMPTZ"),
    ("raw.events", "original_at", "TIMESTAMPTZ"),
    ("raw.loaded_files", "crm_mapping", "VARCHAR"),
    ("raw.loaded_files", "crm_mapping_hash", "VARCHAR"),
    # the file's stat when it was loaded (NULL: hash the file next run, see landing._load_one)
    ("raw.loaded_files", "file_size", "BIGINT"),
    ("raw.loaded_files", "file_mtime_ns", "BIGINT"),
    ("raw.loaded_files", "file_ctime_ns", "BIGINT"),
    ("raw.loaded_files", "file_inode", "BIGINT"),
)


def ensure_raw_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create schema ``raw`` and every raw table if missing (idempotent)."""
    for statement in SCHEMA_DDL:
        con.execute(statement)
    for table, column, column_type in ADDED_COLUMNS:
        con.execute(f'ALTER TABLE {table} ADD COLUMN IF NOT EXISTS "{column}" {column_type}')
