"""Reverse ETL at a million rows: the diff, the file destination and the local webhook server.

    .venv/bin/python tests/benchmarks/bench_reverse_etl.py [--rows 1000000]
                                                           [--webhook-batch-size 1000]

On a fresh DuckDB warehouse holding a segment of --rows members (id, email, names, revenue
as DECIMAL, last order as TIMESTAMPTZ):

1. diff, first sync: ``plan_sync`` with an empty state (every row is an add);
2. file: ``run_sync`` of the whole segment to a JSONL file, then to a Parquet file;
3. webhook: ``run_sync`` to tests/destination_server.py running in its own process on
   127.0.0.1 (signed JSON batches, idempotency keys, per-batch delivery journal and state:
   the real path end to end); the server's count of records is checked afterwards;
4. diff, incremental: 10% of rows changed, 1% removed, 1% added, ``plan_sync`` against the
   full state, then the incremental webhook run.

Prints wall times and rows a second. Targets on the 2-core machine: the diff of 1M rows
under 10 s, webhook throughput at least 20,000 rows a second (rows / the run's duration).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT_ROOT))

import duckdb  # noqa: E402

from reverse_etl.config import DestinationConfig, SyncConfig  # noqa: E402
from reverse_etl.engine import plan_sync, run_sync  # noqa: E402
from tests.destination_server import WEBHOOK_SECRET  # noqa: E402

FIELDS = ["customer_id", "email", "first_name", "last_name", "lifetime_revenue", "last_order_at"]


def build_segment(con: duckdb.DuckDBPyConnection, rows: int) -> None:
    con.execute("CREATE SCHEMA segments")
    con.execute(
        """CREATE TABLE segments.bench_members AS SELECT
             'cus_' || lpad(i::VARCHAR, 10, '0') AS customer_id,
             'person' || i || '@example.com' AS email,
             'First' || (i % 5000) AS first_name,
             'Last' || (i % 7919) AS last_name,
             CAST((i % 100000) / 100 AS DECIMAL(18, 2)) AS lifetime_revenue,
             TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(i % 31536000) AS last_order_at
           FROM range(?) t(i)""",
        [rows],
    )


def sync(name: str, destination: DestinationConfig) -> SyncConfig:
    return SyncConfig(
        name=name,
        model="segments.bench_members",
        primary_key="customer_id",
        destination=destination,
        fields={field: field for field in FIELDS},
        mode="mirror",
    )


def timed(label: str, action):
    started = time.perf_counter()
    value = action()
    seconds = time.perf_counter() - started
    return value, seconds


def start_server() -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.destination_server", "--port", "0"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = server.stdout.readline().strip()
    if not line.startswith("listening on "):
        server.kill()
        raise RuntimeError(f"the destination server did not start: {line!r}")
    return server, line.removeprefix("listening on ")


def server_stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/_stats", timeout=30) as response:
        return json.load(response)


def change_segment(con: duckdb.DuckDBPyConnection, rows: int) -> None:
    con.execute(
        "UPDATE segments.bench_members SET first_name = 'Changed' WHERE hash(customer_id) % 10 = 0"
    )
    con.execute("DELETE FROM segments.bench_members WHERE hash(customer_id) % 100 = 1")
    con.execute(
        """INSERT INTO segments.bench_members SELECT
             'new_' || lpad(i::VARCHAR, 10, '0'), 'new' || i || '@example.com', 'New', 'Member',
             1.00, TIMESTAMPTZ '2026-06-01 00:00:00+00'
           FROM range(?) t(i)""",
        [rows // 100],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--webhook-batch-size", type=int, default=1_000)
    args = parser.parse_args()
    rows = args.rows
    os.environ["BENCH_WEBHOOK_SECRET"] = WEBHOOK_SECRET

    print(
        f"reverse ETL benchmark: {rows:,} rows, {os.cpu_count()} cores, "
        f"DuckDB {duckdb.__version__}, webhook batches of {args.webhook_batch_size:,}"
    )
    with tempfile.TemporaryDirectory(prefix="cdp-bench-retl-") as folder:
        base = Path(folder)
        con = duckdb.connect()
        con.execute(f"ATTACH '{base / 'cdp.duckdb'}' AS warehouse")
        con.execute("USE warehouse")
        con.execute("SET enable_progress_bar = false")
        _, seconds = timed("build", lambda: build_segment(con, rows))
        print(f"segment built: {seconds:.1f}s")

        server, url = start_server()
        try:
            webhook = sync(
                "bench_webhook",
                DestinationConfig(
                    "webhook",
                    {
                        "url": f"{url}/webhook/bench",
                        "secret_env": "BENCH_WEBHOOK_SECRET",
                        "batch_size": args.webhook_batch_size,
                        "timeout_seconds": 60.0,
                        "max_attempts": 5,
                        "backoff_seconds": 0.5,
                        "max_backoff_seconds": 30.0,
                        "rate_limit_per_second": None,
                    },
                ),
            )
            plan, seconds = timed("diff", lambda: plan_sync(con, webhook))
            print(
                f"diff, first sync (all adds):      {plan.planned:>9,} operations "
                f"in {seconds:6.2f}s  target < 10 s"
            )
            plan.close()

            for fmt in ("jsonl", "parquet"):
                files = sync(
                    f"bench_{fmt}", DestinationConfig("file", {"format": fmt, "path": "out"})
                )
                result, seconds = timed(
                    fmt, lambda files=files: run_sync(con, files, base_dir=base)
                )
                size = Path(result.output).stat().st_size / 1e6
                print(
                    f"file sync, {fmt:<7}                {result.delivered:>9,} rows in "
                    f"{seconds:6.2f}s = {result.delivered / seconds:>9,.0f} rows/s ({size:,.0f} MB)"
                )

            result, seconds = timed("webhook", lambda: run_sync(con, webhook, base_dir=base))
            stats = server_stats(url)
            held = stats["records"].get("/webhook/bench", 0)
            print(
                f"webhook sync, first               {result.delivered:>9,} rows in "
                f"{seconds:6.2f}s = {result.delivered / seconds:>9,.0f} rows/s "
                f"({result.batches:,} batches; server holds {held:,} records)  "
                "target >= 20,000 rows/s"
            )
            assert held == rows and stats["max_applications"] == 1, stats

            change_segment(con, rows)
            plan, seconds = timed("diff", lambda: plan_sync(con, webhook))
            print(
                f"diff, incremental (vs {rows:,} in state): {plan.planned:>9,} operations "
                f"in {seconds:6.2f}s ({plan.added:,} added, {plan.changed:,} changed, "
                f"{plan.removed:,} removed)"
            )
            plan.close()
            result, seconds = timed("webhook", lambda: run_sync(con, webhook, base_dir=base))
            expected = con.execute("SELECT count(*) FROM segments.bench_members").fetchone()[0]
            held = server_stats(url)["records"]["/webhook/bench"]
            print(
                f"webhook sync, incremental         {result.delivered:>9,} rows in "
                f"{seconds:6.2f}s = {result.delivered / seconds:>9,.0f} rows/s "
                f"(server holds {held:,} = segment {expected:,})"
            )
            assert held == expected
        finally:
            server.terminate()
            server.wait(timeout=30)
        con.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory of this process: {peak:,.0f} MB")


if __name__ == "__main__":
    main()
