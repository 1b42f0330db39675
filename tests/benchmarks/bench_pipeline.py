"""The whole pipeline at scale: generate, then `cdp run`, per stage wall time and peak memory.

    .venv/bin/python tests/benchmarks/bench_pipeline.py [--customers 100000 1000000]
                                                        [--new-share 0.01] [--workdir DIR]
                                                        [--landing DIR]

For each size: `cdp generate` (timed); the newest --new-share of the events (by timestamp:
new events of known people, new people, anonymous devices that sign in and merge) is held
back (--landing: use that generated folder instead, for one size; its files are changed in
place). Then a full `cdp run` in a subprocess with a fresh warehouse and Dagster home, and an
incremental `cdp run` after the held-back events land as a new file; the incremental run's
cost is reported as a share of the full run's. Peak memory is the largest sum of resident
memory over the `cdp run` process tree (dbt runs as a child process), sampled every 0.5 s;
each stage's peak is the largest sample taken while it ran. Stage times come from the run's
Dagster event log: each step's duration, and for the dbt step the execution times of its
models summed by schema (staging, identity, intermediate, cdp, segments); dbt runs two
models at a time, so these sums overlap and can add up to more than the dbt step's wall
time, which is reported too, with the ten slowest models.
"""

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# This checkout's `cdp` (not whichever one the environment installed).
CDP = [sys.executable, "-m", "orchestration.cli"]


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc (following each
    thread's children list, so only the tree is read, not every process)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * page
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(child) for child in (task / "children").read_text().split())
        except (OSError, IndexError, ValueError):
            continue
    return total


def run_measured(
    command: list[str], env: dict[str, str]
) -> tuple[float, list[tuple[float, int]], str]:
    """Run a command; return wall seconds, the tree RSS samples (epoch seconds, bytes) and
    its output."""
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.time(), tree_rss_bytes(process.pid)))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{output[-5000:]}")
    return time.monotonic() - started, samples, output


def peak(
    samples: list[tuple[float, int]], intervals: list[tuple[float, float]] | None = None
) -> int:
    """The largest sample, of all or of those taken within the (start, end) intervals."""
    return max(
        (
            rss
            for at, rss in samples
            if intervals is None or any(start <= at <= end for start, end in intervals)
        ),
        default=0,
    )


def newest_run_events(dagster_home: Path) -> list:
    """The event log of the newest Dagster run."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        run = instance.get_runs(limit=1)[0]
        return list(instance.all_logs(run.run_id))


def model_runs(events: list) -> list[tuple[str, float, float]]:
    """(asset, start, end) of every dbt model in a run's events, by dbt's execution time."""
    runs = []
    for entry in events:
        event = entry.dagster_event
        if event is None or event.event_type_value != "ASSET_MATERIALIZATION":
            continue
        materialization = event.event_specific_data.materialization
        duration = materialization.metadata.get("Execution Duration")
        if duration is not None:
            asset = materialization.asset_key.to_user_string()
            runs.append((asset, entry.timestamp - float(duration.value), entry.timestamp))
    return runs


def stage_times(events: list) -> list[tuple[str, float, list[tuple[float, float]]]]:
    """(stage, seconds, the stage's (start, end) epoch intervals) of a run's events."""
    starts: dict[str, float] = {}
    steps: dict[str, tuple[float, float]] = {}
    for entry in events:
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value == "STEP_SUCCESS":
            steps[event.step_key] = (starts[event.step_key], entry.timestamp)
    models: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for asset, started, ended in model_runs(events):
        models[asset.split("/")[0]].append((started, ended))

    def seconds(intervals: list[tuple[float, float]]) -> float:
        return sum(end - start for start, end in intervals)

    rows = [("load (raw_tables)", *_step(steps.pop("raw_tables", None)))]
    dbt_interval = steps.pop("cdp_dbt_models", None)
    for schema in ("staging", "identity", "intermediate", "cdp", "segments"):
        intervals = models.pop(schema, [])
        rows.append((f"dbt models: {schema} (sum of model times)", seconds(intervals), intervals))
    rows.append(("dbt step, wall (start-up, all models, tests)", *_step(dbt_interval)))
    rows.extend((f"step {key}", *_step(interval)) for key, interval in sorted(steps.items()))
    return rows


def _step(interval: tuple[float, float] | None) -> tuple[float, list[tuple[float, float]]]:
    if interval is None:
        return 0.0, []
    return interval[1] - interval[0], [interval]


def event_time(line: bytes) -> float | None:
    """The `timestamp` of a generated JSON line as epoch seconds (None when it has none)."""
    start = line.find(b'"timestamp":"')
    if start < 0:
        return None
    text = line[start + 13 : line.find(b'"', start + 13)].decode()
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def hold_back_newest(events_dir: Path, share: float, out: Path) -> int:
    """Move the newest `share` of the event lines (by timestamp) of every file in events_dir
    into the file `out`; lines without a readable timestamp stay, and a file left empty is
    removed (the incremental run must see the held-back file as new, not as a replaced
    one, which would rebuild the event models). Returns the lines moved."""
    files = sorted(events_dir.glob("*.jsonl"))
    times = np.array(
        [t for path in files for line in path.open("rb") if (t := event_time(line)) is not None]
    )
    cutoff = float(np.quantile(times, 1 - share))
    moved = 0
    with out.open("wb") as held:
        for path in files:
            kept = path.with_suffix(".kept")
            with path.open("rb") as lines, kept.open("wb") as keep:
                for line in lines:
                    t = event_time(line)
                    if t is not None and t > cutoff:
                        held.write(line)
                        moved += 1
                    else:
                        keep.write(line)
            if kept.stat().st_size:
                kept.replace(path)
            else:  # e.g. the held-back file of an earlier benchmark: it must land anew
                kept.unlink()
                path.unlink()
    return moved


def print_run(
    title: str, seconds: float, samples: list[tuple[float, int]], dagster_home: Path, output: str
) -> None:
    print(f"{title}: {seconds:.1f} s end to end, peak {peak(samples) / 2**30:.2f} GiB")
    print("| stage | seconds | peak GiB |\n|---|---:|---:|")
    events = newest_run_events(dagster_home)
    for stage, stage_seconds, intervals in stage_times(events):
        print(f"| {stage} | {stage_seconds:.1f} | {peak(samples, intervals) / 2**30:.2f} |")
    slowest = sorted(model_runs(events), key=lambda run: run[1] - run[2])[:10]
    listed = ", ".join(f"{asset} {ended - started:.1f}" for asset, started, ended in slowest)
    print(f"\nslowest dbt models, s: {listed}")
    summary = output[output.find("\nRun ") :].strip()
    print(
        "\n"
        + "\n".join(
            line
            for line in summary.splitlines()
            if "nanobind" not in line and not line.startswith((" - ", "See https"))
        )
    )


def bench(customers: int, workdir: Path, new_share: float, landing: Path | None) -> None:
    root = workdir / f"customers-{customers}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    env = {**os.environ, "DAGSTER_HOME": str(root / "dagster"), "GX_ANALYTICS_ENABLED": "false"}
    (root / "dagster").mkdir()
    generate_seconds, generate_samples = 0.0, []
    if landing is None:
        landing = root / "landing"
        generate_seconds, generate_samples, _ = run_measured(
            [*CDP, "generate", "--customers", str(customers), "--seed", "1",
             "--end", "2026-11-15", "--out", str(landing)],
            env,
        )  # fmt: skip
    events = sum(1 for path in (landing / "events").glob("*.jsonl") for _ in path.open("rb"))
    held_back = root / "new-events.jsonl"
    new_events = hold_back_newest(landing / "events", new_share, held_back)
    warehouse = root / "warehouse" / "cdp.duckdb"
    run = [*CDP, "run", "--landing", str(landing), "--warehouse", str(warehouse)]
    print(f"\n## {customers:,} customers, {events:,} event lines")
    if generate_seconds:
        print(f"generate: {generate_seconds:.1f} s, peak {peak(generate_samples) / 2**30:.2f} GiB")
    full_seconds, full_samples, output = run_measured(run, env)
    print_run(
        f"full cdp run ({events - new_events:,} events)",
        full_seconds,
        full_samples,
        root / "dagster",
        output,
    )
    shutil.move(held_back, landing / "events" / "zz-new-events.jsonl")
    seconds, samples, output = run_measured(run, env)
    print_run(
        f"\nincremental cdp run (+{new_events:,} events, {new_events / events:.1%})",
        seconds,
        samples,
        root / "dagster",
        output,
    )
    print(f"\nincremental / full: {seconds / full_seconds:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--new-share", type=float, default=0.01)
    parser.add_argument("--landing", type=Path, help="a folder `cdp generate` made (one size)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cdp-bench-pipeline"))
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    for customers in args.customers:
        bench(customers, args.workdir, args.new_share, args.landing)


if __name__ == "__main__":
    main()
