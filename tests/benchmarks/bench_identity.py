"""Identity resolution at scale: the project's components step against scipy and naive label
propagation, on graphs of 1M and 5M identifiers in three shapes.

    .venv/bin/python tests/benchmarks/bench_identity.py            (also run by `make bench`)
    .venv/bin/python tests/benchmarks/bench_identity.py --sizes 1000000 --shapes chain

Shapes (node ids shuffled, as identity_identifiers numbers identifiers by type and value):
- people: people of 1-6 identifiers (the first a user_id for 60% of them, else an email; the
  rest mostly anonymous ids), each linked to its first identifier, plus 1% random cross-links,
  so some components hold two user_ids and go through the per-type limit (1 user_id);
- chain: one chain through every identifier (one anonymous id per visit, the worst diameter);
- stars: stars of 100,000 leaves around one identifier (super nodes).

Methods, each in a fresh process so that its peak memory (VmHWM) is its own:
- project: `resolve_components` of dbt_project/models/identity/identity_components.py, the
  whole dbt model step: read identifiers and edges from a DuckDB file, scipy components,
  per-type limits, labels written back to a DuckDB table;
- project + ids: the same, then the id registry's first run (identity_registry.py: every
  identifier gets a customer id), as the next dbt model does;
- scipy round trip: the fair reference for a step that starts and ends in the warehouse
  (shared/notes/connected-components.md): read the edges from the DuckDB file, build the
  sparse matrix, `scipy.sparse.csgraph.connected_components`, write the labels back;
- scipy alone: `connected_components` on the same edges, already in memory as numpy arrays;
- label propagation: naive min-label propagation in DuckDB SQL, one round per query, capped
  at --lp-max-rounds rounds or --lp-max-seconds; reported as "did not finish" with the
  rounds done and the labels still changing.
Project and scipy run --repeat times (the fastest is shown, with the highest peak memory):
the machine may be shared, and the fastest run is the one least disturbed.
"""

import argparse
import importlib.util
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODELS = PROJECT_ROOT / "dbt_project" / "models" / "identity"
STAR_LEAVES = 100_000
TYPES = pd.DataFrame(
    {
        "priority": [1, 2, 3, 5],
        "identifier_type": ["user_id", "email", "phone", "anonymous_id"],
        "max_per_customer": pd.array([1, None, None, None], dtype="Int64"),
    }
)


@dataclass
class Result:
    method: str
    seconds: float
    rounds: int
    peak_mb: float
    components: int
    note: str = ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--shapes", nargs="+", default=["people", "chain", "stars"])
    parser.add_argument("--lp-max-rounds", type=int, default=100)
    parser.add_argument("--lp-max-seconds", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of project and scipy; the fastest is shown"
    )
    args = parser.parse_args()

    print(
        f"identity resolution benchmark: duckdb {duckdb.__version__}, numpy {np.__version__}, "
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at the start"
    )
    header = (
        f"{'shape':<7} {'identifiers':>11} {'edges':>10}  {'method':<18} {'rounds':>6} "
        f"{'seconds':>8} {'peak MB':>8} {'components':>10}  note"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="bench_identity_") as workdir:
        for size in args.sizes:
            for shape in args.shapes:
                database = Path(workdir) / f"{shape}_{size}.duckdb"
                edge_count = write_graph(database, shape, size, np.random.default_rng(args.seed))
                project = best_of(args.repeat, measure_project, str(database))
                with_ids = best_of(args.repeat, measure_project_with_ids, str(database))
                round_trip = best_of(args.repeat, measure_scipy_round_trip, str(database))
                scipy = best_of(args.repeat, measure_scipy, str(database))
                propagation = run_in_fresh_process(
                    measure_label_propagation,
                    str(database),
                    args.lp_max_rounds,
                    args.lp_max_seconds,
                )
                results = [project, with_ids, round_trip, scipy, propagation]
                for result in results:
                    note = result.note
                    if result in (project, with_ids):
                        note = (
                            f"{result.seconds / round_trip.seconds:.2f}x scipy round trip, "
                            f"{result.seconds / scipy.seconds:.2f}x scipy alone"
                        )
                    print(
                        f"{shape:<7} {size:>11,} {edge_count:>10,}  {result.method:<18} "
                        f"{result.rounds:>6} {result.seconds:>8.2f} {result.peak_mb:>8.0f} "
                        f"{result.components:>10,}  {note}"
                    )
                check(shape, project, with_ids, round_trip, propagation)
                database.unlink()
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


def check(
    shape: str, project: Result, with_ids: Result, scipy: Result, propagation: Result
) -> None:
    """Same components everywhere, except that per-type limits may split some (people)."""
    assert with_ids.components == project.components, (with_ids, project)
    if shape == "people":
        assert project.components >= scipy.components, (project, scipy)
    else:
        assert project.components == scipy.components, (project, scipy)
    if propagation.note == "finished":
        assert propagation.components == scipy.components, (propagation, scipy)


def best_of(repeat: int, function, *arguments) -> Result:
    """The fastest of `repeat` runs (each in a fresh process), with the highest peak memory."""
    results = [run_in_fresh_process(function, *arguments) for _ in range(repeat)]
    best = min(results, key=lambda result: result.seconds)
    best.peak_mb = max(result.peak_mb for result in results)
    return best


def run_in_fresh_process(function, *arguments) -> Result:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        return pool.submit(function, *arguments).result()


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited at spawn)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def connect(database, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(database), read_only=read_only)
    con.execute("set enable_progress_bar = false")
    return con


# --- graphs -----------------------------------------------------------------------------------


def write_graph(database: Path, shape: str, size: int, rng: np.random.Generator) -> int:
    """Write nodes, edges and types tables shaped like the identity models; return edge count."""
    types, src, dst = {"people": people, "chain": chain, "stars": stars}[shape](size, rng)
    order = rng.permutation(size)  # new id of each node
    src, dst = order[src], order[dst]
    src, dst = np.minimum(src, dst), np.maximum(src, dst)
    keep = src != dst
    pairs = np.unique(np.stack([src[keep], dst[keep]], axis=1), axis=0)
    src, dst = pairs[:, 0], pairs[:, 1]
    node_types = np.empty(size, dtype=np.int64)
    node_types[order] = types
    edge_frame = pd.DataFrame(
        {
            "src_node_id": src,
            "dst_node_id": dst,
            "first_seen_ms": rng.integers(1_700_000_000_000, 1_760_000_000_000, len(src)),
        }
    )
    node_frame = pd.DataFrame({"node_id": np.arange(size, dtype=np.int64), "priority": node_types})
    with connect(database) as con:
        con.register("node_frame", node_frame)
        con.register("edge_frame", edge_frame)
        con.register("type_frame", TYPES)
        con.execute("create table types as select * from type_frame")
        con.execute(
            "create table nodes as select n.node_id, n.priority, t.identifier_type, "
            "'id-' || n.node_id as identifier_value, "
            "timestamptz '2025-01-01' + to_seconds(hash(n.node_id) % 31536000) as first_seen_at, "
            "null::varchar as held_out_rule, null::varchar as held_out_detail "
            "from node_frame as n join types as t using (priority) order by node_id"
        )
        con.execute(
            "create table edges as select src_node_id, dst_node_id, "
            "make_timestamptz(first_seen_ms * 1000) as first_seen_at from edge_frame"
        )
    np.save(database.with_suffix(".src.npy"), src)
    np.save(database.with_suffix(".dst.npy"), dst)
    return len(src)


def people(size: int, rng: np.random.Generator):
    sizes = rng.integers(1, 7, size // 2)
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), size) + 1]
    sizes[-1] -= sizes.sum() - size
    sizes = sizes[sizes > 0]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    first = np.repeat(starts, sizes)
    types = rng.choice([5, 5, 5, 2, 3], size)
    types[starts] = np.where(rng.random(len(starts)) < 0.6, 1, 2)
    members = np.arange(size)[first != np.arange(size)]
    src, dst = first[members], members
    cross = int(len(src) * 0.01)
    src = np.concatenate([src, rng.integers(0, size, cross)])
    dst = np.concatenate([dst, rng.integers(0, size, cross)])
    return types, src, dst


def chain(size: int, rng: np.random.Generator):
    nodes = np.arange(size)
    return np.full(size, 5), nodes[:-1], nodes[1:]


def stars(size: int, rng: np.random.Generator):
    nodes = np.arange(size)
    centers = (nodes // (STAR_LEAVES + 1)) * (STAR_LEAVES + 1)
    leaves = nodes[nodes != centers]
    return np.full(size, 5), centers[leaves], leaves


# --- methods ------------------------------------------------------------------------------------


def load_model(name: str):
    spec = importlib.util.spec_from_file_location(name, MODELS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def components_step(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """identity_components: relations in, labels written to a table."""
    labels = load_model("identity_components").resolve_components(
        con.table("nodes"), con.table("edges"), con.table("types")
    )
    con.register("labels_frame", labels)
    con.execute("create or replace table labels as select * from labels_frame")
    return labels


def measure_project(database: str) -> Result:
    started = time.perf_counter()
    with connect(database) as con:
        labels = components_step(con)
    seconds = time.perf_counter() - started
    return Result("project", seconds, 1, peak_mb(), int(labels["component_id"].nunique()))


def measure_project_with_ids(database: str) -> Result:
    registry = load_model("identity_registry")
    started = time.perf_counter()
    with connect(database) as con:
        components_step(con)
        rows = registry.registry_changes(
            con,
            identifiers="select * from nodes",
            components="select * from labels",
            edges="select * from edges",
            previous=None,
            changed_at=datetime.now(UTC),
        )
        con.register("registry_rows", rows)
        con.execute("create or replace table registry as select * from registry_rows")
        seconds = time.perf_counter() - started
        count = con.execute("select count(distinct customer_id) from registry").fetchall()[0][0]
    return Result("project + ids", seconds, 1, peak_mb(), count)


def measure_scipy_round_trip(database: str) -> Result:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    started = time.perf_counter()
    with connect(database) as con:
        size = con.execute("select count(*) from nodes").fetchall()[0][0]
        edges = con.table("edges").project("src_node_id, dst_node_id").fetchnumpy()
        src = np.asarray(edges["src_node_id"], dtype=np.int64)
        dst = np.asarray(edges["dst_node_id"], dtype=np.int64)
        graph = coo_matrix((np.ones(len(src), dtype=bool), (src, dst)), shape=(size, size))
        count, labels = connected_components(graph.tocsr(), directed=False)
        frame = pd.DataFrame({"node_id": np.arange(size, dtype=np.int64), "component_id": labels})
        con.register("labels_frame", frame)
        con.execute("create or replace table scipy_labels as select * from labels_frame")
    return Result("scipy round trip", time.perf_counter() - started, 1, peak_mb(), int(count))


def measure_scipy(database: str) -> Result:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    src = np.load(Path(database).with_suffix(".src.npy"))
    dst = np.load(Path(database).with_suffix(".dst.npy"))
    with connect(database, read_only=True) as con:
        size = con.execute("select count(*) from nodes").fetchall()[0][0]
    started = time.perf_counter()
    graph = coo_matrix((np.ones(len(src), dtype=bool), (src, dst)), shape=(size, size)).tocsr()
    count, _ = connected_components(graph, directed=False)
    return Result("scipy alone", time.perf_counter() - started, 1, peak_mb(), int(count))


def measure_label_propagation(database: str, max_rounds: int, max_seconds: float) -> Result:
    started = time.perf_counter()
    changed_per_round = []
    with connect(database) as con:
        con.execute("create or replace table lp as select node_id, node_id as label from nodes")
        while len(changed_per_round) < max_rounds:
            con.execute(
                """
                create or replace table lp_next as
                with neighbour_labels as (
                    select e.src_node_id as node_id, l.label
                    from edges as e join lp as l on l.node_id = e.dst_node_id
                    union all
                    select e.dst_node_id as node_id, l.label
                    from edges as e join lp as l on l.node_id = e.src_node_id
                ),
                best as (select node_id, min(label) as label from neighbour_labels group by node_id)
                select l.node_id, least(l.label, coalesce(b.label, l.label)) as label
                from lp as l left join best as b on l.node_id = b.node_id
                """
            )
            changed = con.execute(
                "select count(*) from lp join lp_next using (node_id) "
                "where lp.label <> lp_next.label"
            ).fetchall()[0][0]
            con.execute("drop table lp")
            con.execute("alter table lp_next rename to lp")
            changed_per_round.append(changed)
            if changed == 0 or time.perf_counter() - started > max_seconds:
                break
        count = con.execute("select count(distinct label) from lp").fetchall()[0][0]
    finished = changed_per_round[-1] == 0
    shown = ", ".join(f"{c:,}" for c in changed_per_round[:4])
    if len(changed_per_round) > 4:
        shown += f", ... {changed_per_round[-1]:,}"
    note = "finished" if finished else f"did not finish (cap); labels changed per round: {shown}"
    return Result(
        "label propagation",
        time.perf_counter() - started,
        len(changed_per_round),
        peak_mb(),
        count,
        note,
    )


if __name__ == "__main__":
    sys.exit(main())
