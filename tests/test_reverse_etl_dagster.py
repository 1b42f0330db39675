"""Syncs in Dagster: one asset per enabled sync downstream of its model, reporting its counts;
a failed sync fails its asset with the reason; a sync with its own schedule runs in its own
job (then publishes), not in the pipeline job."""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from orchestration.assets.dbt import build_dbt_assets
from orchestration.assets.publish import build_publish_asset
from orchestration.assets.syncs import build_sync_assets, build_sync_schedules
from orchestration.jobs import PIPELINE_JOB_NAME, cdp_pipeline
from orchestration.project import dbt_project
from orchestration.resources import CdpPaths, build_resources
from reverse_etl.config import DestinationConfig, SyncConfig, load_syncs

REPO = Path(__file__).resolve().parents[1]


@cache
def dbt_models() -> dg.AssetsDefinition:
    return build_dbt_assets(dbt_project())


def file_sync(**changes) -> SyncConfig:
    sync = SyncConfig(
        name="hv_file",
        model="segments.high_value_customers",
        primary_key="customer_id",
        destination=DestinationConfig("file", {"path": "exports/hv", "format": "csv"}),
        fields={"customer_id": "customer_id", "email": "email"},
        mode="mirror",
    )
    return dataclasses.replace(sync, **changes)


@pytest.fixture
def warehouse(tmp_path) -> Path:
    path = tmp_path / "cdp.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA segments")
        con.execute(
            "CREATE TABLE segments.high_value_customers AS SELECT 'cus_' || i AS customer_id,"
            " 'p' || i || '@example.com' AS email FROM range(30) t(i)"
        )
    return path


def materialize(sync: SyncConfig, warehouse: Path) -> dg.ExecuteInProcessResult:
    [asset] = build_sync_assets([sync], dbt_models())
    return dg.materialize(
        [asset],
        resources={"paths": CdpPaths(warehouse=str(warehouse))},
        raise_on_error=False,
    )


def test_a_sync_asset_reports_its_counts_and_duration_as_metadata(warehouse):
    first = materialize(file_sync(), warehouse)
    with duckdb.connect(str(warehouse)) as con:
        con.execute(
            "DELETE FROM segments.high_value_customers WHERE customer_id IN ('cus_1', 'cus_2')"
        )
        con.execute(
            "UPDATE segments.high_value_customers SET email = 'x@example.com'"
            " WHERE customer_id = 'cus_3'"
        )
    second = materialize(file_sync(), warehouse)

    assert first.success and second.success
    [event] = second.get_asset_materialization_events()
    metadata = {key: value.value for key, value in event.materialization.metadata.items()}
    assert {
        k: metadata[k] for k in ("planned", "added", "changed", "removed", "delivered", "failed")
    } == {
        "planned": 3,
        "added": 0,
        "changed": 1,
        "removed": 2,
        "delivered": 3,
        "failed": 0,
    }
    assert metadata["status"] == "succeeded"
    assert 0 <= metadata["duration_seconds"] < 60
    assert metadata["output"].endswith(".csv")
    [first_event] = first.get_asset_materialization_events()
    assert first_event.materialization.metadata["added"].value == 30


def test_a_failed_sync_fails_its_asset_with_the_reason(warehouse, monkeypatch):
    monkeypatch.delenv("CDP_TEST_MISSING_TOKEN", raising=False)
    sync = file_sync(
        name="hv_hubspot",
        mode="upsert",
        destination=DestinationConfig(
            "hubspot", {"token_env": "CDP_TEST_MISSING_TOKEN", "base_url": "http://127.0.0.1:9"}
        ),
    )

    result = materialize(sync, warehouse)

    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "CDP_TEST_MISSING_TOKEN is not set" in message
    assert result.get_asset_materialization_events() == []


def test_scheduled_syncs_run_in_their_own_job_and_disabled_syncs_have_no_asset():
    syncs = load_syncs(REPO / "reverse_etl" / "syncs.yml")
    enabled = [dataclasses.replace(s, enabled=True) for s in syncs]
    assets = build_sync_assets(enabled, dbt_models())
    upstream = list(dbt_models().keys) + [key for asset in assets for key in asset.keys]
    definitions = dg.Definitions(
        assets=[dbt_models(), *assets, build_publish_asset(upstream)],
        jobs=[cdp_pipeline],
        schedules=build_sync_schedules(enabled),
        resources=build_resources(),
    )

    def synced(job_name: str) -> set[str]:
        keys = definitions.resolve_job_def(job_name).asset_layer.selected_asset_keys
        return {
            k.to_user_string() for k in keys if k.path[0] in ("reverse_etl", "published_warehouse")
        }

    scheduled = [s.name for s in enabled if s.schedule]
    assert scheduled == ["subscribers_to_hubspot"]
    assert "reverse_etl/subscribers_to_hubspot" not in synced(PIPELINE_JOB_NAME)
    assert "reverse_etl/high_value_customers_file" in synced(PIPELINE_JOB_NAME)
    assert synced("sync_subscribers_to_hubspot") == {
        "reverse_etl/subscribers_to_hubspot",
        "published_warehouse",
    }
    schedule = definitions.resolve_schedule_def("sync_subscribers_to_hubspot_schedule")
    assert schedule.cron_schedule == "15 */6 * * *"
    # as shipped, only the secret-free file sync is enabled: the others have no asset
    shipped = build_sync_assets(syncs, dbt_models())
    assert [a.key.to_user_string() for a in shipped] == ["reverse_etl/high_value_customers_file"]
