"""The raw tables, loaded from the landing directory by orchestration.loading."""

import dagster as dg

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
    landing = paths.landing_dir()
    context.log.info(f"Loading exports from {landing}")
    with connect(paths.warehouse_path()) as con:
        report = load_landing(con, landing, progress=context.log.info)
    for path in report.ignored:
        context.log.warning(f"Ignored {path}: not a known export (see the README's landing layout)")
    for failed in (f for f in report.files if f.status == "unreadable"):
        context.log.error(f"Could not read {failed.path}: {failed.error}")
    by_kind = report.by_kind()
    for kind, table in RAW_TABLES.items():
        files = [f for f in report.files if f.kind == kind]
        loaded, rejected = by_kind.get(kind, (0, 0))
        yield dg.MaterializeResult(
            asset_key=table.split("."),
            metadata={
                "files_seen": len(files),
                "files_loaded": sum(f.status in ("loaded", "replaced") for f in files),
                "files_unreadable": sum(f.status == "unreadable" for f in files),
                "rows_loaded": loaded,
                "rows_rejected": rejected,
            },
        )
