"""The pipeline job: every asset, one step after another (DuckDB has one writer)."""

import dagster as dg

PIPELINE_JOB_NAME = "cdp_pipeline"

cdp_pipeline = dg.define_asset_job(
    PIPELINE_JOB_NAME,
    selection=dg.AssetSelection.all(),
    executor_def=dg.in_process_executor,
    description="Load new exports, build the dbt models (tests as checks), run the syncs, publish.",
)
