"""The pipeline job: every asset, one step after another (DuckDB has one writer)."""

import dagster as dg

PIPELINE_JOB_NAME = "cdp_pipeline"

cdp_pipeline = dg.define_asset_job(
    PIPELINE_JOB_NAME,
    # syncs with their own `schedule` in syncs.yml run in their own job (assets/syncs.py)
    selection=dg.AssetSelection.all() - dg.AssetSelection.tag("cdp/trigger", "own_schedule"),
    executor_def=dg.in_process_executor,
    description="Load new exports, build the dbt models (tests as checks), run the syncs, publish.",
)
