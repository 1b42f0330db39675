"""The published copy of the warehouse that readers open."""

import dagster as dg

from orchestration.resources import CdpPaths
from orchestration.warehouse import publish


def build_publish_asset(upstream: list[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.asset(
        key=["published_warehouse"],
        deps=upstream,
        group_name="publish",
        description="Atomic copy of the warehouse for readers, swapped in after a successful run.",
    )
    def published_warehouse(paths: CdpPaths) -> dg.MaterializeResult:
        warehouse = paths.warehouse_path()
        target = publish(warehouse)
        return dg.MaterializeResult(metadata={"path": str(target), "bytes": target.stat().st_size})

    return published_warehouse
