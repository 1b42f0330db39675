"""Load the landing directory into the ``raw`` schema (DuckDB, no Dagster).

The contract lives in ``docs/architecture.md`` ("Landing directory", "Raw tables"):

* ``crm/contacts*.csv``, ``crm/companies*.csv``, ``crm/deals*.csv``, ``crm/tickets*.csv``
  -> ``raw.crm_<kind>`` through a column mapping (``mappings``, ``crm``);
* ``events/*.jsonl`` and ``events/*.jsonl.gz`` -> ``raw.events``, parsed in DuckDB
  (``events``);
* every row read is loaded or rejected into ``raw.rejected_rows`` with its reason; every
  other file in ``crm/`` or ``events/`` is reported as ignored (``landing``).
"""

from orchestration.loading.crm import parse_timestamp
from orchestration.loading.landing import (
    FileLoad,
    LoadReport,
    discover_landing,
    landing_files,
    load_landing,
)
from orchestration.loading.mappings import MappingError, load_crm_mappings, snake_case
from orchestration.loading.schema import (
    CRM_COLUMNS,
    CRM_KINDS,
    FILE_KINDS,
    MESSAGE_TYPES,
    RAW_TABLES,
    ensure_raw_schema,
)

__all__ = [
    "CRM_COLUMNS",
    "CRM_KINDS",
    "FILE_KINDS",
    "MESSAGE_TYPES",
    "RAW_TABLES",
    "FileLoad",
    "LoadReport",
    "MappingError",
    "discover_landing",
    "ensure_raw_schema",
    "landing_files",
    "load_crm_mappings",
    "load_landing",
    "parse_timestamp",
    "snake_case",
]
