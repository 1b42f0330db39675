"""The one Definitions of the project (loaded by `dagster dev -w workspace.yaml` and `cdp run`)."""

import dagster as dg

from orchestration.assets.dbt import build_dbt_assets
from orchestration.assets.predictive import build_predictive_asset
from orchestration.assets.publish import build_publish_asset
from orchestration.assets.raw import raw_tables
from orchestration.assets.syncs import build_sync_assets, build_sync_schedules
from orchestration.checks import raw_data_quality
from orchestration.jobs import cdp_pipeline
from orchestration.paths import SYNCS_FILE
from orchestration.project import dbt_project
from orchestration.resources import build_resources
from orchestration.schedules import hourly_refresh
from orchestration.sensors import new_landing_files
from reverse_etl.config import load_syncs


@dg.definitions
def defs() -> dg.Definitions:
    dbt_models = build_dbt_assets(dbt_project())
    syncs = load_syncs(SYNCS_FILE)
    sync_assets = build_sync_assets(syncs, dbt_models)
    upstream = list(dbt_models.keys) + [key for asset in sync_assets for key in asset.keys]
    return dg.Definitions(
        assets=[
            raw_tables,
            dbt_models,
            *sync_assets,
            build_predictive_asset(dbt_models),
            build_publish_asset(upstream),
        ],
        asset_checks=[raw_data_quality],
        jobs=[cdp_pipeline],
        schedules=[hourly_refresh, *build_sync_schedules(syncs)],
        sensors=[new_landing_files],
        resources=build_resources(),
    )
