"""Event loading at scale: the loader against DuckDB's bare read_json, plain and gzipped.

    .venv/bin/python tests/benchmarks/bench_loading.py [--events 10000000] [--files 10]
                                                       [--workdir DIR] [--keep]
                                                       [--inputs plain gzip]

Writes --events Segment-spec messages (page, track, identify with context, properties and
traits, like the SDKs send) into --files JSON Lines files, and the same files gzipped
(`gzip -1`, two at a time). Then, each in its own process on a fresh DuckDB file:

* bare:   CREATE TABLE events AS SELECT * FROM read_json([files], format='newline_delimited')
* loader: orchestration.loading.load_landing on a landing directory holding the files
          (validation, rejects with reasons, file manifest and hashes included)

for the plain files and for the gzipped ones. Prints wall time, MB/s of uncompressed JSON,
lines/s, peak resident memory and CPU time (user + system) of the process and the load
average before and after (the machine may be shared: CPU time is the steadier figure); the
loader's ratio to bare is the figure the target (at least 0.5) is about. The generated data
is reused from --workdir when it is already there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

PAGES = ["Home", "Shop", "Sale", "Blog", "Help", "About", "Sign Up", "New Arrivals"]
PRODUCTS = [
    ("prod_1031", "FC-SRM-30", "Vitamin C Serum", 48.0, "Beauty"),
    ("prod_2040", "TS-BLK-M", "Organic Cotton T-Shirt", 25.0, "Apparel"),
    ("prod_3077", "MUG-CER-12", "Ceramic Mug", 14.5, "Home"),
    ("prod_4102", "RUN-SHO-42", "Trail Running Shoes", 129.0, "Footwear"),
]
AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)


def message(n: int) -> str:
    """The n-th message: deterministic, about 600 bytes, as analytics.js sends it."""
    person = n // 20
    anonymous = f"{person:08x}-1d06-449e-b1ea-{person * 7919 % 10**12:012d}"
    at = 1_780_000_000 + n * 3  # seconds
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at))
    context = {
        "library": {"name": "analytics.js", "version": "2.11.1"},
        "userAgent": AGENT,
        "ip": f"10.{person % 256}.{person // 256 % 256}.{n % 250 + 1}",
    }
    base = {
        "messageId": f"{n:08x}-e5f5-4891-8be3-{n * 2654435761 % 10**12:012d}",
        "anonymousId": anonymous,
        "context": context,
        "timestamp": f"{stamp}.{n % 1000:03d}Z",
        "sentAt": f"{stamp}.{(n + 300) % 1000:03d}Z",
        "receivedAt": f"{stamp}.{(n + 700) % 1000:03d}Z",
    }
    kind = n % 10
    if kind < 6:
        page = PAGES[n % len(PAGES)]
        path = "/" + page.lower().replace(" ", "-")
        context["page"] = {"path": path, "url": f"https://shop.example.com{path}"}
        body = {
            "type": "page",
            "name": page,
            "properties": {"path": path, "url": f"https://shop.example.com{path}"},
        }
    elif kind < 9:
        product_id, sku, name, price, category = PRODUCTS[n % len(PRODUCTS)]
        body = {
            "type": "track",
            "userId": f"u_{person:012x}",
            "event": "Order Completed" if kind == 8 else "Product Added",
            "properties": {
                "order_id": f"ORD-{n}",
                "revenue": price,
                "currency": "USD",
                "products": [
                    {
                        "product_id": product_id,
                        "sku": sku,
                        "name": name,
                        "price": price,
                        "category": category,
                        "quantity": 1,
                    }
                ],
            },
        }
    else:
        body = {
            "type": "identify",
            "userId": f"u_{person:012x}",
            "traits": {
                "email": f"person{person}@example.com",
                "firstName": "Ada",
                "lastName": f"Lovelace{person % 97}",
                "plan": "pro" if person % 3 else "free",
            },
        }
    return json.dumps({**body, **base}, separators=(",", ":"))


def generate(workdir: Path, events: int, files: int) -> tuple[list[Path], list[Path], int]:
    """Plain and gzipped JSONL files (reused when present); returns them and the bytes."""
    plain_dir = workdir / "plain" / "events"
    gz_dir = workdir / "gzip" / "events"
    marker = workdir / f"generated-{events}-{files}.json"
    plain = [plain_dir / f"events-{i:03d}.jsonl" for i in range(files)]
    gzipped = [gz_dir / f"events-{i:03d}.jsonl.gz" for i in range(files)]
    if marker.exists():
        return plain, gzipped, json.loads(marker.read_text())["bytes"]
    shutil.rmtree(workdir / "plain", ignore_errors=True)
    shutil.rmtree(workdir / "gzip", ignore_errors=True)
    plain_dir.mkdir(parents=True)
    gz_dir.mkdir(parents=True)
    started = time.monotonic()
    per_file = -(-events // files)
    total = 0
    for index, path in enumerate(plain):
        first, last = index * per_file, min(events, (index + 1) * per_file)
        with open(path, "w", buffering=1 << 24) as out:
            for start in range(first, last, 10_000):
                chunk = "\n".join(message(n) for n in range(start, min(last, start + 10_000)))
                out.write(chunk + "\n")
        total += path.stat().st_size
        print(f"  wrote {path.name}: {last - first:,} events ({time.monotonic() - started:.0f}s)")
    pending: list[subprocess.Popen] = []
    for path, target in zip(plain, gzipped):
        with open(target, "wb") as out:
            pending.append(subprocess.Popen(["gzip", "-1", "-c", str(path)], stdout=out))
        if len(pending) == 2:
            pending.pop(0).wait()
    for process in pending:
        process.wait()
    print(f"  gzipped in {time.monotonic() - started:.0f}s since the start")
    marker.write_text(json.dumps({"bytes": total}))
    return plain, gzipped, total


BARE = """
import sys, time, duckdb
files, database = sys.argv[1].split(","), sys.argv[2]
con = duckdb.connect(database)
con.execute("SET enable_progress_bar = false")
started = time.monotonic()
con.execute(
    "CREATE TABLE events AS SELECT * FROM read_json(?, format='newline_delimited')", [files]
)
rows = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
con.close()
print(f"RESULT {time.monotonic() - started} {rows}")
"""

LOADER = """
import sys, time
from pathlib import Path
from orchestration.loading import load_landing
from orchestration.warehouse import connect
landing, database = Path(sys.argv[1]), Path(sys.argv[2])
con = connect(database)
started = time.monotonic()
report = load_landing(con, landing, progress=lambda line: print("   ", line, flush=True))
con.close()
print(f"RESULT {time.monotonic() - started} {report.rows_loaded} {report.rows_rejected}")
"""


def measure(code: str, args: list[str], database: Path) -> tuple[float, int, float, list[str]]:
    """Run ``code`` in a fresh process; (seconds it reports, peak RSS bytes, CPU seconds
    (user + system) of the process, RESULT fields)."""
    for stale in (database, database.with_name(database.name + ".wal")):
        stale.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args, str(database)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    result: list[str] = []
    for line in process.stdout:
        if line.startswith("RESULT "):
            result = line.split()[1:]
        else:
            print(line, end="", flush=True)
    _pid, status, usage = os.wait4(process.pid, 0)
    if status != 0 or not result:
        raise SystemExit(f"measurement failed (exit status {status})")
    for stale in (database, database.with_name(database.name + ".wal")):
        stale.unlink(missing_ok=True)
    cpu = usage.ru_utime + usage.ru_stime
    return float(result[0]), usage.ru_maxrss * 1024, cpu, result[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cdp-bench-loading"))
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--inputs", nargs="+", choices=["plain", "gzip"], default=["plain", "gzip"])
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    print(f"Generating {args.events:,} events in {args.files} files under {workdir}")
    plain, gzipped, size = generate(workdir, args.events, args.files)
    packed = sum(path.stat().st_size for path in gzipped)
    print(f"  {size / 1e9:.2f} GB of JSONL, {packed / 1e9:.2f} GB gzipped\n")

    database = workdir / "bench.duckdb"
    figures = {}
    for label, files, landing in (
        ("plain", plain, workdir / "plain"),
        ("gzip", gzipped, workdir / "gzip"),
    ):
        if label not in args.inputs:
            continue
        for method in ("bare", "loader"):
            load = os.getloadavg()[0]
            print(f"{label} / {method} (load average {load:.2f}) ...", flush=True)
            if method == "bare":
                seconds, peak, cpu, rest = measure(BARE, [",".join(map(str, files))], database)
                rows = int(rest[0])
            else:
                seconds, peak, cpu, rest = measure(LOADER, [str(landing)], database)
                rows = int(rest[0])
                if int(rest[1]):
                    print(f"    {int(rest[1]):,} rows rejected")
            if rows != args.events:
                raise SystemExit(f"{label}/{method} loaded {rows:,} rows, not {args.events:,}")
            figures[label, method] = seconds
            print(
                f"  {label:5} {method:6} {seconds:7.1f} s  {size / seconds / 1e6:7.1f} MB/s  "
                f"{rows / seconds:10,.0f} lines/s  peak RSS {peak / 2**20:,.0f} MiB  "
                f"CPU {cpu:.1f} s  "
                f"(load average {load:.2f} -> {os.getloadavg()[0]:.2f})",
                flush=True,
            )
    print()
    for label in args.inputs:
        ratio = figures[label, "bare"] / figures[label, "loader"]
        print(f"loader / bare throughput, {label}: {ratio:.2f} (target at least 0.50)")
    if not args.keep:
        shutil.rmtree(workdir / "plain", ignore_errors=True)
        shutil.rmtree(workdir / "gzip", ignore_errors=True)
        for marker in workdir.glob("generated-*.json"):
            marker.unlink()


if __name__ == "__main__":
    main()
