"""The purchase propensity model's latest evaluation as Dagster metadata.

The model trains inside dbt when it is due (intermediate.int_purchase_propensity_models, a
Python model) and scores every build (intermediate.int_purchase_propensity); this asset,
downstream of cdp.predictive_model_runs, puts the version of the model that scored the build,
when it was trained and the holdout AUC of the model and of its recency baseline on the run,
where the Dagster UI shows them.
"""

from typing import Any

import dagster as dg
from dagster_dbt import get_asset_key_for_model

from orchestration.lookup import latest_propensity_run, propensity_summary
from orchestration.resources import CdpPaths
from orchestration.warehouse import connect


def build_predictive_asset(dbt_models: dg.AssetsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=["predictive", "purchase_propensity"],
        deps=[get_asset_key_for_model([dbt_models], "predictive_model_runs")],
        group_name="predictive",
        description="The purchase propensity model of this build: version, holdout AUC, "
        "and the AUC of recency alone on the same holdout (cdp.predictive_model_runs).",
    )
    def purchase_propensity(
        context: dg.AssetExecutionContext, paths: CdpPaths
    ) -> dg.MaterializeResult:
        with connect(paths.warehouse_path()) as con:
            run = latest_propensity_run(con)
        context.log.info(f"purchase propensity: {propensity_summary(run)}")
        return dg.MaterializeResult(metadata=_metadata(run))

    return purchase_propensity


def _metadata(run: dict[str, Any] | None) -> dict[str, Any]:
    if run is None:
        return {"status": "no model run: no customers yet"}
    metadata: dict[str, Any] = {
        "model_version": run["model_version"] or "",
        "status": run["status"],
        "baseline": run["baseline"],
        "horizon_days": run["horizon_days"],
        "trained_at": str(run["trained_at"]),
        "reference_at": str(run["reference_at"]),
        "scored_as_of": str(run["scored_as_of"]),
        "holdout_cutoff_at": str(run["holdout_cutoff_at"]),
        "training_rows": run["training_rows"],
        "holdout_rows": run["holdout_rows"],
        "holdout_positives": run["holdout_positives"],
        "scored_customers": run["scored_customers"],
    }
    if run["holdout_auc"] is not None:
        metadata["holdout_auc"] = dg.MetadataValue.float(round(run["holdout_auc"], 4))
        metadata["baseline_auc"] = dg.MetadataValue.float(round(run["baseline_auc"], 4))
        metadata["auc_lift"] = dg.MetadataValue.float(
            round(run["holdout_auc"] - run["baseline_auc"], 4)
        )
    return metadata
