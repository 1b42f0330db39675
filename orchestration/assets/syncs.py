"""One asset per reverse-ETL sync in reverse_etl/syncs.yml, downstream of the model it reads."""

import dagster as dg
from dagster_dbt import get_asset_key_for_model

from orchestration.resources import CdpPaths
from orchestration.warehouse import connect
from reverse_etl.config import SyncConfig
from reverse_etl.engine import run_sync


def build_sync_assets(
    syncs: list[SyncConfig], dbt_models: dg.AssetsDefinition
) -> list[dg.AssetsDefinition]:
    return [_sync_asset(sync, dbt_models) for sync in syncs]


def _sync_asset(sync: SyncConfig, dbt_models: dg.AssetsDefinition) -> dg.AssetsDefinition:
    model_name = sync.model.split(".")[-1]

    @dg.asset(
        key=["reverse_etl", sync.name],
        deps=[get_asset_key_for_model([dbt_models], model_name)],
        group_name="reverse_etl",
        description=f"Sync {sync.name}: {sync.model} to a {sync.destination.type} destination.",
    )
    def sync_asset(context: dg.AssetExecutionContext, paths: CdpPaths) -> dg.MaterializeResult:
        warehouse = paths.warehouse_path()
        with connect(warehouse) as con:
            result = run_sync(con, sync, base_dir=warehouse.parent)
        context.log.info(
            f"{sync.name}: {result.added} added, {result.changed} changed, "
            f"{result.removed} removed, {result.failed} failed"
        )
        return dg.MaterializeResult(
            metadata={
                "planned": result.planned,
                "added": result.added,
                "changed": result.changed,
                "removed": result.removed,
                "failed": result.failed,
                "duration_seconds": round(result.duration_seconds, 3),
            }
        )

    return sync_asset
