"""Dagster resources."""

from functools import cached_property
from importlib.metadata import version as installed_version
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource
from packaging import version

from orchestration import paths
from orchestration.project import DBT_EXECUTABLE, dbt_project


class CdpPaths(dg.ConfigurableResource):
    """The warehouse file and the landing directory of a run.

    Empty values mean: CDP_WAREHOUSE / CDP_LANDING_DIR from the environment of the run,
    else the defaults (warehouse/cdp.duckdb, seeds/demo).
    """

    warehouse: str = ""
    landing: str = ""

    def warehouse_path(self) -> Path:
        return Path(self.warehouse).resolve() if self.warehouse else paths.warehouse_path()

    def landing_dir(self) -> Path:
        return Path(self.landing).resolve() if self.landing else paths.landing_dir()


class DbtCli(DbtCliResource):
    """dagster-dbt's dbt resource, told the version of the dbt it runs, and without a dbt
    adapter in the Dagster process.

    dagster-dbt runs `dbt --version` before the first invocation of each resource, and Dagster
    makes the resource anew for every run: each run started dbt once more only to read its
    version, and dbt asked PyPI for the latest release (1.8-2.1 s a run, and a request to the
    network). The executable is the dbt beside this Python (DBT_EXECUTABLE), so its version is
    the installed dbt-core's.

    Before each dbt command dagster-dbt also makes a dbt adapter in the calling process
    (imports, the profile, dbt's macros: 0.7-1.9 s), which it uses only to fetch column
    metadata (`fetch_column_metadata`). These assets do not ask for it, so none is made; the
    invocation handles a missing adapter (it is None when making one fails).
    """

    @cached_property
    def _cli_version(self) -> version.Version:
        return version.parse(installed_version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args) -> None:
        return None


def build_resources() -> dict:
    return {
        "paths": CdpPaths(),
        "dbt": DbtCli(project_dir=dbt_project(), dbt_executable=DBT_EXECUTABLE),
    }
