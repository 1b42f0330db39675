"""Where things live: the project's folders and the paths a run uses.

Run-time settings come from the environment when asked for (never at import time):
CDP_WAREHOUSE (the DuckDB file), CDP_LANDING_DIR (the exports), DAGSTER_HOME.
"""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
SYNCS_FILE = PROJECT_ROOT / "reverse_etl" / "syncs.yml"
DEMO_LANDING_DIR = PROJECT_ROOT / "seeds" / "demo"
DEFAULT_WAREHOUSE = PROJECT_ROOT / "warehouse" / "cdp.duckdb"
DEFAULT_DAGSTER_HOME = PROJECT_ROOT / ".dagster"


def warehouse_path() -> Path:
    """The warehouse file: CDP_WAREHOUSE, else warehouse/cdp.duckdb in the project."""
    return Path(os.environ.get("CDP_WAREHOUSE") or DEFAULT_WAREHOUSE).expanduser().resolve()


def landing_dir() -> Path:
    """The landing directory: CDP_LANDING_DIR, else the demo exports in seeds/demo."""
    return Path(os.environ.get("CDP_LANDING_DIR") or DEMO_LANDING_DIR).expanduser().resolve()


def published_path(warehouse: Path) -> Path:
    """The read-only copy that each successful run publishes beside the warehouse file.

    cdp.duckdb -> cdp_published.duckdb. DuckDB names a database after its file, so in
    cdp.duckdb itself `cdp.customers` is ambiguous (catalog cdp or schema cdp); in the
    published copy it is not.
    """
    return warehouse.with_name(f"{warehouse.stem}_published{warehouse.suffix}")
