"""The whole pipeline at scale: generate, then `cdp run`, per stage wall time and peak memory.

    .venv/bin/python tests/benchmarks/bench_pipeline.py [--customers 100000 1000000] [--workdir DIR]

For each size: `cdp generate` (timed), then one `cdp run` in a subprocess with a fresh
warehouse and Dagster home. Peak memory is the largest sum of resident memory over the
`cdp run` process tree (dbt runs as a child process), sampled every 100 ms. Stage times come
from the run's Dagster event log: each step's duration, and for the dbt step the execution
time of its models grouped by schema (staging, identity, cdp, segments); the rest of the dbt
step (start-up, parsing, tests) is reported as "dbt overhead and tests".
"""

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = defaultdict(list)
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            children[int(fields[1])].append(int(entry.name))
            rss[int(entry.name)] = int(fields[21]) * page
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += rss.get(current, 0)
        stack.extend(children.get(current, []))
    return total


def run_measured(command: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Run a command; return wall seconds, peak tree RSS in bytes and its output."""
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_bytes(process.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{output[-5000:]}")
    return time.monotonic() - started, peak, output


def stage_times(dagster_home: Path) -> list[tuple[str, float]]:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        run = instance.get_runs(limit=1)[0]
        events = list(instance.all_logs(run.run_id))
    starts: dict[str, float] = {}
    steps: dict[str, float] = {}
    models: dict[str, float] = defaultdict(float)
    for entry in events:
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value == "STEP_SUCCESS":
            steps[event.step_key] = entry.timestamp - starts[event.step_key]
        elif event.event_type_value == "ASSET_MATERIALIZATION":
            materialization = event.event_specific_data.materialization
            duration = materialization.metadata.get("Execution Duration")
            if duration is not None:
                models[materialization.asset_key.path[0]] += float(duration.value)
    rows = [("load (raw_tables)", steps.pop("raw_tables", 0.0))]
    dbt_step = steps.pop("cdp_dbt_models", 0.0)
    for schema in ("staging", "identity", "cdp", "segments"):
        rows.append((f"dbt models: {schema}", models.pop(schema, 0.0)))
    rows.append(("dbt overhead and tests", dbt_step - sum(t for _, t in rows[1:])))
    rows.extend((f"step {key}", seconds) for key, seconds in sorted(steps.items()))
    return rows


def bench(customers: int, workdir: Path) -> None:
    root = workdir / f"customers-{customers}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    env = {**os.environ, "DAGSTER_HOME": str(root / "dagster"), "GX_ANALYTICS_ENABLED": "false"}
    (root / "dagster").mkdir()
    landing = root / "landing"
    generate_seconds, generate_peak, _ = run_measured(
        [str(BIN / "cdp"), "generate", "--customers", str(customers), "--seed", "1",
         "--end", "2026-11-15", "--out", str(landing)],
        env,
    )  # fmt: skip
    events = sum(1 for path in (landing / "events").glob("*.jsonl") for _ in path.open("rb"))
    run_seconds, run_peak, output = run_measured(
        [str(BIN / "cdp"), "run", "--landing", str(landing),
         "--warehouse", str(root / "warehouse" / "cdp.duckdb")],
        env,
    )  # fmt: skip
    print(f"\n## {customers:,} customers, {events:,} event lines")
    print(f"generate: {generate_seconds:.1f} s, peak {generate_peak / 2**30:.2f} GiB")
    print(f"cdp run:  {run_seconds:.1f} s end to end, peak {run_peak / 2**30:.2f} GiB")
    print("| stage | seconds |\n|---|---:|")
    for stage, seconds in stage_times(root / "dagster"):
        print(f"| {stage} | {seconds:.1f} |")
    summary = output[output.find("\nRun ") :].strip()
    print("\n" + summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cdp-bench-pipeline"))
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    for customers in args.customers:
        bench(customers, args.workdir)


if __name__ == "__main__":
    main()
