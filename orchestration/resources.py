"""Dagster resources."""

from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource

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


def build_resources() -> dict:
    return {
        "paths": CdpPaths(),
        "dbt": DbtCliResource(project_dir=dbt_project(), dbt_executable=DBT_EXECUTABLE),
    }
