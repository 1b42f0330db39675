"""One asset per enabled reverse-ETL sync in reverse_etl/syncs.yml, downstream of its model.

A sync without ``schedule`` runs in the pipeline job, after its model. A sync with a
``schedule`` is tagged ``cdp/trigger=own_schedule`` (the pipeline job leaves it out) and
gets its own job and schedule. Each materialization reports planned, added, changed,
removed, delivered and failed rows and the duration; a failed sync fails its asset with
the reason (rows a destination rejected do not fail it: they are retried next run).
"""

import dagster as dg
from dagster_dbt import get_asset_key_for_model

from orchestration.resources import CdpPaths
from orchestration.warehouse import connect
from reverse_etl.config import SyncConfig
from reverse_etl.engine import SyncError, SyncResult, run_sync

TRIGGER_TAG = "cdp/trigger"
PUBLISHED_WAREHOUSE = dg.AssetKey(["published_warehouse"])
OWN_SCHEDULE = "own_schedule"


def sync_asset_key(sync: SyncConfig) -> dg.AssetKey:
    return dg.AssetKey(["reverse_etl", sync.name])


def build_sync_assets(
    syncs: list[SyncConfig], dbt_models: dg.AssetsDefinition
) -> list[dg.AssetsDefinition]:
    return [_sync_asset(sync, dbt_models) for sync in syncs if sync.enabled]


def build_sync_schedules(syncs: list[SyncConfig]) -> list[dg.ScheduleDefinition]:
    """A job and a schedule for each enabled sync that has its own ``schedule``."""
    schedules = []
    for sync in syncs:
        if not (sync.enabled and sync.schedule):
            continue
        job_name = "sync_" + sync.name.replace("-", "_")
        job = dg.define_asset_job(
            job_name,
            # then publish, so that readers see it (as `cdp sync` does)
            selection=dg.AssetSelection.assets(sync_asset_key(sync), PUBLISHED_WAREHOUSE),
            executor_def=dg.in_process_executor,
            description=f"Run sync {sync.name} on its own schedule.",
        )
        schedules.append(
            dg.ScheduleDefinition(
                name=f"{job_name}_schedule",
                job=job,
                cron_schedule=sync.schedule,
                default_status=dg.DefaultScheduleStatus.RUNNING,
            )
        )
    return schedules


def _metadata(result: SyncResult) -> dict:
    metadata = {
        "planned": result.planned,
        "added": result.added,
        "changed": result.changed,
        "removed": result.removed,
        "delivered": result.delivered,
        "failed": result.failed,
        "duration_seconds": round(result.duration_seconds, 3),
        "status": result.status,
        "mode": result.mode,
        "run_id": result.run_id,
    }
    if result.output:
        metadata["output"] = result.output
    if result.error:
        metadata["error"] = result.error
    return metadata


def _sync_asset(sync: SyncConfig, dbt_models: dg.AssetsDefinition) -> dg.AssetsDefinition:
    model_name = sync.model.split(".")[-1]

    @dg.asset(
        key=sync_asset_key(sync),
        deps=[get_asset_key_for_model([dbt_models], model_name)],
        group_name="reverse_etl",
        tags={TRIGGER_TAG: OWN_SCHEDULE} if sync.schedule else None,
        description=(
            f"Sync {sync.name}: {sync.model} to a {sync.destination.type} destination "
            f"(mode {sync.mode})."
        ),
    )
    def sync_asset(context: dg.AssetExecutionContext, paths: CdpPaths) -> dg.MaterializeResult:
        warehouse = paths.warehouse_path()
        try:
            with connect(warehouse) as con:
                result = run_sync(con, sync, base_dir=warehouse.parent)
        except SyncError as error:
            raise dg.Failure(
                description=str(error),
                metadata=_metadata(error.result) if error.result else None,
            ) from error
        summary = (
            f"{sync.name}: {result.added} added, {result.changed} changed, "
            f"{result.removed} removed, {result.failed} failed"
        )
        if result.failed:
            context.log.warning(f"{summary}: {result.error}")
        else:
            context.log.info(summary)
        return dg.MaterializeResult(metadata=_metadata(result))

    return sync_asset
