"""`cdp sync` as a user runs it: dry runs, disabled syncs, and syncs killed mid-run.

The crash tests really kill the `cdp sync` process (SIGKILL) in the middle of a run, then
run it again and compare the destination with the segment: nothing lost, nothing applied
twice, and only the batches that were not confirmed are sent again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import duckdb
import psycopg
import pytest

from tests.conftest import PROJECT_ROOT, run_cdp
from tests.destination_server import WEBHOOK_SECRET, DestinationServer

ROWS = 200


def make_warehouse(path: Path) -> Path:
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA segments")
        con.execute(
            """CREATE TABLE segments.members AS SELECT
                 'cus_' || lpad(i::VARCHAR, 4, '0') AS customer_id,
                 'person' || i || '@example.com' AS email,
                 'First' || i AS first_name,
                 CAST(i * 10 + 0.5 AS DECIMAL(18, 2)) AS lifetime_revenue
               FROM range(1, ?) t(i)""",
            [ROWS + 1],
        )
    return path


def write_syncs(path: Path, destination: str, enabled: str = "true") -> Path:
    path.write_text(
        f"""\
syncs:
  - name: members_out
    enabled: {enabled}
    model: members
    primary_key: customer_id
    mode: mirror
    destination:
{destination}
    fields: [customer_id, email, first_name, lifetime_revenue]
"""
    )
    return path


def query(warehouse: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.fixture
def warehouse(tmp_path) -> Path:
    return make_warehouse(tmp_path / "cdp.duckdb")


def webhook_destination(server: DestinationServer, batch_size: int = 20) -> str:
    return (
        "      type: webhook\n"
        f"      url: {server.url}/webhook/members\n"
        "      secret_env: TEST_WEBHOOK_SECRET\n"
        f"      batch_size: {batch_size}\n"
        "      backoff_seconds: 0.01\n"
        "      timeout_seconds: 5\n"
    )


def cdp_sync(syncs: Path, warehouse: Path, *extra: str) -> list[str]:
    return ["sync", *extra, "--syncs", str(syncs), "--warehouse", str(warehouse)]


def start_cdp(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestration.cli", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# --------------------------------------------------------------------------- dry run


def test_a_dry_run_prints_the_planned_operations_and_sends_nothing(tmp_path, warehouse):
    with DestinationServer() as server:
        syncs = write_syncs(tmp_path / "syncs.yml", webhook_destination(server))
        env = {"TEST_WEBHOOK_SECRET": WEBHOOK_SECRET}

        result = run_cdp(*cdp_sync(syncs, warehouse, "--dry-run"), env=env, timeout=120)

        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == (
            f"members_out: would add {ROWS}, change 0, remove 0 (mode mirror, webhook "
            "destination); nothing sent"
        )
        assert lines[1:3] == ["  upsert cus_0001", "  upsert cus_0002"]
        assert lines[-1] == f"  ... and {ROWS - 20} more"
        assert server.requests == []
    assert query(warehouse, "SELECT status, planned FROM reverse_etl.sync_runs") == [
        ("dry_run", ROWS)
    ]
    assert query(warehouse, "SELECT count(*) FROM reverse_etl.sync_state") == [(0,)]


def test_a_disabled_sync_is_skipped_and_refused_by_name(tmp_path, warehouse):
    syncs = write_syncs(
        tmp_path / "syncs.yml",
        "      type: webhook\n      url: https://example.invalid/x\n"
        "      secret_env: UNSET_SECRET_FOR_TEST\n",
        enabled="false",
    )

    everything = run_cdp(*cdp_sync(syncs, warehouse), env={}, timeout=120)
    by_name = run_cdp(*cdp_sync(syncs, warehouse, "members_out"), env={}, timeout=120)

    assert everything.returncode == 0, everything.stderr
    assert "members_out: skipped (enabled: false in syncs.yml)" in everything.stdout
    assert by_name.returncode == 2
    assert "sync 'members_out' is disabled" in by_name.stderr
    assert "set enabled: true" in by_name.stderr


# --------------------------------------------------------------------------- crash and re-run


def test_a_webhook_sync_killed_mid_run_resends_only_the_unconfirmed_batches(tmp_path, warehouse):
    env = {"TEST_WEBHOOK_SECRET": WEBHOOK_SECRET}
    with DestinationServer() as server:
        syncs = write_syncs(tmp_path / "syncs.yml", webhook_destination(server))
        # the 4th batch is applied by the receiver, then its answer is held back
        paused = server.pause_after("webhook", 4)
        process = start_cdp(cdp_sync(syncs, warehouse, "members_out"), env)
        try:
            assert paused.wait(timeout=120), "the sync never reached its 4th batch"
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        finally:
            server.resume()
            if process.poll() is None:
                process.kill()
        assert process.returncode == -signal.SIGKILL
        assert query(warehouse, "SELECT status FROM reverse_etl.sync_runs") == [("running",)]
        assert len(server.records["/webhook/members"]) == 80  # 4 batches applied
        # batches are journaled in order while the next one is on the wire: 2 or 3 of
        # the 4 answered batches were confirmed when the process died
        confirmed = {
            b for (b,) in query(warehouse, "SELECT batch_id FROM reverse_etl.sync_batches")
        }
        sent_before = {r.idempotency_key for r in server.requests_to("webhook")}
        assert len(sent_before) == 4 and confirmed < sent_before and len(confirmed) >= 2

        rerun = run_cdp(*cdp_sync(syncs, warehouse), env=env, timeout=300)

        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        expected = {
            key: {
                "customer_id": key,
                "email": email,
                "first_name": first,
                "lifetime_revenue": float(rev),
            }
            for key, email, first, rev in query(warehouse, "SELECT * FROM segments.members")
        }
        assert server.records["/webhook/members"] == expected
        assert max(server.applied_operations.values()) == 1  # nothing applied twice
        assert len(server.applied_operations) == ROWS
        sent = Counter(r.idempotency_key for r in server.requests_to("webhook"))
        # exactly the unconfirmed batches were sent again, with the same idempotency keys
        assert {key for key, times in sent.items() if times == 2} == sent_before - confirmed
        assert len(sent) == ROWS // 20 and max(sent.values()) == 2
    kept = 20 * len(confirmed)
    runs = query(
        warehouse,
        "SELECT status, planned, delivered FROM reverse_etl.sync_runs ORDER BY started_at",
    )
    assert runs == [("interrupted", ROWS, kept), ("succeeded", ROWS - kept, ROWS - kept)]
    assert query(warehouse, "SELECT count(*) FROM reverse_etl.sync_state") == [(ROWS,)]
    # both runs' plan tables were dropped once folded into the state
    assert query(
        warehouse,
        "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'sync_plan_%'",
    ) == [(0,)]


def test_a_postgres_sync_killed_mid_run_and_rerun_ends_equal_to_the_segment(
    tmp_path, warehouse, postgres_server
):
    dsn = postgres_server.create_database()
    env = {"TEST_PG_DSN": dsn}
    destination = (
        "      type: postgres\n"
        "      dsn_env: TEST_PG_DSN\n"
        "      table: marketing.members\n"
        "      batch_size: 10\n"
        "      rate_limit_per_second: 40\n"
    )
    syncs = write_syncs(tmp_path / "syncs.yml", destination)
    process = start_cdp(cdp_sync(syncs, warehouse), env)
    landed = 0
    with psycopg.connect(dsn, autocommit=True) as pg:
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and process.poll() is None:
                if pg.execute("SELECT to_regclass('marketing.members')").fetchone()[0]:
                    landed = pg.execute("SELECT count(*) FROM marketing.members").fetchone()[0]
                    if landed >= 60:
                        break
                time.sleep(0.01)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        assert 60 <= landed < ROWS, "the kill did not land mid-run"

        rerun = run_cdp(*cdp_sync(syncs, warehouse), env=env, timeout=300)

        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        rows = pg.execute(
            "SELECT customer_id, email, first_name, lifetime_revenue, _cdp_created_by_sync"
            " FROM marketing.members ORDER BY 1"
        ).fetchall()
    model = query(warehouse, "SELECT *, 'members_out' FROM segments.members ORDER BY 1")
    assert rows == model
    statuses = [
        s
        for (s,) in query(warehouse, "SELECT status FROM reverse_etl.sync_runs ORDER BY started_at")
    ]
    assert statuses == ["interrupted", "succeeded"]
