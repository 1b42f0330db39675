"""The raw tables, loaded from the landing directory by orchestration.loading."""

import dagster as dg

from orchestration.checks import prepare_validation
from orchestration.loading import RAW_TABLES, load_landing
from orchestration.resources import CdpPaths
from orchestration.warehouse import connect


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            table.split("."),
            group_name="raw",
            description=f"{table}: every row of the landing {kind} exports, with file and line.",
        )
        for kind, table in RAW_TABLES.items()
    ],
    can_subset=False,
)
def raw_tables(context: dg.AssetExecutionContext, paths: CdpPaths):
    """Load new and changed export files; rejected rows go to raw.rejected_rows."""
    prepare_validation()  # the checks that follow: their child starts while this step loads
    landing = paths.landing_dir()
    context.log.info(f"Loading exports from {landing}")
    with connect(paths.warehouse_path()) as con:
        report = load_landing(con, landing, progress=context.log.info)
    for path in report.ignored:
        context.log.warning(f"Ignored {path}: not a known export (see the README's landing layout)")
    for failed in report.unreadable:
        context.log.error(f"Could not read {failed.path}: {failed.error}")
    for kind, table in RAW_TABLES.items():
        files = [f for f in report.files if f.kind == kind]
        metadata = {
            "files_seen": len(files),
            "files_loaded": sum(f.status in ("loaded", "replaced") for f in files),
            "files_unreadable": sum(f.status == "unreadable" for f in files),
            "rows_read": sum(f.rows_read for f in files),
            "rows_loaded": sum(f.rows_loaded for f in files),
            "rows_rejected": sum(f.rows_rejected for f in files),
            "unreadable": dg.MetadataValue.json(
                [{"file": str(f.path), "error": f.error} for f in files if f.error]
            ),
        }
        mappings = sorted({f.mapping for f in files if f.mapping})
        if mappings:
            metadata["crm_mappings"] = ", ".join(mappings)
        if kind == "events":
            metadata["repeated_message_ids"] = report.repeated_message_ids
        yield dg.MaterializeResult(asset_key=table.split("."), metadata=metadata)


def unreadable_files(run_id: str, instance: dg.DagsterInstance) -> list[dict]:
    """{file, error} of every export the raw_tables step of run ``run_id`` could not read."""
    found = []
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = record.dagster_event.event_specific_data.materialization
        if materialization.asset_key.path[0] != "raw":
            continue
        value = materialization.metadata.get("unreadable")
        found.extend(value.value if value is not None else [])
    return found
