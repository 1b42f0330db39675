"""The Dagster definitions, and `dagster dev -w workspace.yaml` serving them."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg

from orchestration.definitions import defs
from orchestration.jobs import PIPELINE_JOB_NAME

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def asset_keys(definitions: dg.Definitions) -> set[str]:
    graph = definitions.resolve_asset_graph()
    return {key.to_user_string() for key in graph.get_all_asset_keys()}


def test_definitions_hold_every_stage_of_the_pipeline():
    definitions = defs()
    keys = asset_keys(definitions)
    for expected in [
        "raw/crm_contacts",
        "raw/events",
        "staging/stg_events__messages",
        "identity/identity_components",
        "cdp/customers",
        "cdp/customer_identifiers",
        "cdp/segments",
        "cdp/segment_memberships",
        "segments/high_value_customers",
        "reverse_etl/high_value_customers_file",
        "published_warehouse",
    ]:
        assert expected in keys
    assert definitions.resolve_job_def(PIPELINE_JOB_NAME) is not None
    assert definitions.resolve_schedule_def("hourly_refresh").cron_schedule == "0 * * * *"
    assert definitions.resolve_sensor_def("new_landing_files") is not None


def test_dbt_tests_are_asset_checks_and_syncs_sit_downstream_of_their_models():
    graph = defs().resolve_asset_graph()
    checks = {key.name for key in graph.asset_check_keys}
    assert any("unique" in name and "customer_id" in name for name in checks)
    sync = dg.AssetKey(["reverse_etl", "high_value_customers_file"])
    assert dg.AssetKey(["segments", "high_value_customers"]) in graph.get(sync).parent_keys
    published = graph.get(dg.AssetKey(["published_warehouse"]))
    assert sync in published.parent_keys


def test_the_dbt_resource_knows_the_version_of_the_dbt_it_runs():
    """The run's dbt resource reads dbt's version from the installed package instead of asking
    `dbt --version` each run: the two must agree, or dagster-dbt would treat dbt as another
    version than it is."""
    resource = defs().resources["dbt"]
    reported = subprocess.run(
        [resource.dbt_executable, "--version"], capture_output=True, text=True, check=True
    ).stdout
    installed = reported.split("installed:", 1)[1].split()[0]
    assert str(resource._cli_version) == installed


def test_the_dbt_resource_makes_no_dbt_adapter_in_the_dagster_process():
    """dagster-dbt would make a dbt adapter in this process before each dbt command, only to
    fetch column metadata that the assets never ask for; the resource runs dbt without one."""
    resource = defs().resources["dbt"]
    invocation = resource.cli(["ls", "--select", "customers", "--output", "name"])
    try:
        invocation.wait()
        assert invocation.is_successful()
        assert invocation.adapter is None
    finally:
        shutil.rmtree(invocation.target_path, ignore_errors=True)


def test_the_sensor_asks_for_a_run_only_when_landing_files_change(tmp_path, monkeypatch):
    (tmp_path / "events").mkdir()
    (tmp_path / "crm").mkdir()
    (tmp_path / "events" / "a.jsonl").write_text("{}\n")
    monkeypatch.setenv("CDP_LANDING_DIR", str(tmp_path))
    sensor = defs().resolve_sensor_def("new_landing_files")
    with dg.instance_for_test() as instance:
        first = sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
        assert len(first.run_requests) == 1
        again = sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, cursor=first.cursor)
        )
        assert again.run_requests == []
        (tmp_path / "events" / "b.jsonl").write_text("{}\n")
        later = sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, cursor=first.cursor)
        )
        assert len(later.run_requests) == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dagster_dev_serves_the_asset_graph(tmp_path):
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    env["PATH"] = "/usr/bin:/bin"  # not the venv: the code location must find dbt by itself
    dagster = Path(sys.executable).with_name("dagster")
    server = subprocess.Popen(
        [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    query = json.dumps({"query": "{ assetNodes { assetKey { path } } }"}).encode()
    keys: set[str] = set()
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and "cdp/customers" not in keys:
            time.sleep(2)
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/graphql",
                    data=query,
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=10) as response:
                    nodes = json.load(response)["data"]["assetNodes"]
                keys = {"/".join(node["assetKey"]["path"]) for node in nodes}
            except (OSError, KeyError, TypeError, ValueError):
                continue
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a slow shutdown on a busy machine is not the test
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
    assert {"raw/events", "cdp/customers", "reverse_etl/high_value_customers_file"} <= keys
