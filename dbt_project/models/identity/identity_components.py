"""Connected components of the identity graph, with per-type limits.

1. Exact connected components of every allowed edge with scipy: one pass over a sparse
   matrix, no rounds, so a long chain (one anonymous id per visit) costs no more than a star.
2. Components that break a per-type limit (identity_rules.yml max_per_customer, e.g. two
   user_ids joined through a shared device) are resolved again by adding their edges one by
   one, strongest first (the priority of the weaker end, then first seen), refusing any link that would give one
   customer more identifiers of a type than its limit. identifiers_held_out lists the refused
   links (allowed edges whose ends end up in different components) with the reason.

A component's id is its lowest node_id (component_id after the limits, unsplit_component_id
before them), so that it does not depend on which identifiers were read.

Incremental: a run reads again only the components of the identifiers identity_identifiers
classified again since the newest _built_at here, and of both ends of the links
identity_edges made again since: every identifier of their unsplit components, those
identifiers, and the links between them (delete+insert by node_id). A component none of them
was in has the same identifiers and links as before, and keeps its rows. The post-hook
deletes the rows of identifiers held out now; the model empties the table first when
identity_identifiers was emptied and rebuilt (records collected again, or the rules changed),
as identity_edges' pre-hook does (_empty_when_stale). _built_at is the newest _built_at of the
identifiers and links read. The identifiers read are all those with a node_id read again, so
a new identifier whose node_id (a hash) another already has is read with it and refused, as
in a full run.

`resolve_components` is the whole step, DuckDB relations in and one row per identifier out
(numbers only, so that writing 5M rows back stays cheap);
tests/benchmarks/bench_identity.py times it and tests/test_identity_components.py checks it.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def model(dbt, session):
    # dbt-duckdb writes a Python model's batch from the model's own connection (`session`)
    # after dbt's transaction began, so dbt sees no batch columns at first and rolls its
    # transaction back once: on_schema_change="fail" would always fail, and the work of a
    # pre-hook would be undone. What the SQL models do in pre-hooks is done here, on
    # `session`; the post-hooks (_identity__models.yml) run after the batch is written.
    dbt.config(
        materialized="incremental",
        incremental_strategy="delete+insert",
        unique_key="node_id",
        on_schema_change="append_new_columns",
    )
    identifiers = dbt.ref("identity_identifiers")
    edges = dbt.ref("identity_edges")
    nodes = identifiers.filter("node_id is not null")
    links = edges.filter("is_allowed")
    if dbt.is_incremental:
        _empty_when_stale(session, str(dbt.this), identifiers.sql_query())
        session.execute(
            REGION.format(
                this=dbt.this, identifiers=identifiers.sql_query(), edges=edges.sql_query()
            )
        )
        nodes = nodes.filter("node_id in (select node_id from identity_components_region)")
        links = links.filter(
            "src_node_id in (select node_id from identity_components_region) "
            "or dst_node_id in (select node_id from identity_components_region)"
        )
    [(built_at,)] = session.sql(
        f"select greatest((select max(_built_at) from ({identifiers.sql_query()})), "
        f"(select max(_built_at) from ({edges.sql_query()})))"
    ).fetchall()
    frame = resolve_components(nodes, links, dbt.ref("identity_identifier_types"))
    frame["_built_at"] = pd.Series(pd.Timestamp(built_at), index=frame.index)
    return frame


def _empty_when_stale(session, this: str, identifiers: str) -> None:
    """Empty `this` so that the run resolves every component: when it was built by an earlier
    version without the columns an incremental run reads (they are added), or when
    identity_identifiers was emptied and built again since its newest _built_at (every
    identifiers row is newer: records collected again, or the rules changed; as the macro
    identity_empty_if_identifiers_rebuilt does for identity_edges)."""
    present = set(session.sql(f"select * from {this} limit 0").columns)
    missing = [(name, kind) for name, kind in NEW_COLUMNS if name not in present]
    if missing:
        session.execute(f"delete from {this}")
        for name, kind in missing:
            session.execute(f"alter table {this} add column {name} {kind}")
    session.execute(
        f"delete from {this} where (select min(_built_at) from ({identifiers})) "
        f"> (select max(_built_at) from {this})"
    )


# The columns an incremental run reads that earlier versions of the table did not have.
NEW_COLUMNS = (("unsplit_component_id", "bigint"), ("_built_at", "timestamptz"))


# The node ids read again by an incremental run, into a temp table: the identifiers classified
# again since the newest _built_at here (held out or not: their would-be node id, macro
# identity_node_id) and both ends of the links made again since, with every identifier of
# the unsplit components any of them was in.
REGION = """
create or replace temp table identity_components_region as
with watermark as (
    select coalesce(max(_built_at), '-infinity'::timestamptz) as built_at from {this}
),
changed as (
    select (hash(identifier_type, identifier_value) >> 1)::bigint as node_id
    from ({identifiers}) where _built_at > (select built_at from watermark)
    union
    select src_node_id from ({edges}) where _built_at > (select built_at from watermark)
    union
    select dst_node_id from ({edges}) where _built_at > (select built_at from watermark)
)
select node_id from changed
union
select node_id from {this}
where unsplit_component_id in (
    select unsplit_component_id from {this} where node_id in (select node_id from changed)
)
"""


@dataclass(frozen=True)
class Refusal:
    weaker: int  # node that was not linked
    other: int  # node it would have been linked to
    broken: tuple[tuple[int, int, int], ...]  # (type code, count it would reach, limit)


def resolve_components(nodes, edges, identifier_types) -> pd.DataFrame:
    """node_id, component_id, split_by_limit and unsplit_component_id of every usable
    identifier: a component's id is its lowest node_id, after the limits (component_id) and
    before them (unsplit_component_id).

    nodes: node_id (any distinct integers), priority; edges: src_node_id, dst_node_id,
    first_seen_at; identifier_types: priority, max_per_customer. Types are coded by their
    priority, which the rules keep unique. identifiers_held_out describes the refused links
    (the allowed edges whose ends end up in different components).

    scipy wants nodes numbered 0..n-1: each node is numbered by its node_id's rank, so the
    node id order still breaks ties in apply_limits. split_by_limit is true for the
    identifiers of a component that a per-type limit split: only between those can a link
    have been refused, so identifiers_held_out looks for refused links among them alone.
    """
    limits = dict(
        identifier_types.filter("max_per_customer is not null")
        .project("priority, max_per_customer")
        .fetchall()
    )
    node_columns = nodes.project("node_id, priority").order("node_id").fetchnumpy()
    node_ids = np.asarray(node_columns["node_id"], dtype=np.int64)
    index = pd.Index(node_ids)
    if not index.is_unique:
        repeated = int(node_ids[1:][node_ids[1:] == node_ids[:-1]][0])
        raise ValueError(
            f"identity_identifiers.node_id {repeated} belongs to two identifiers: their values "
            "share a hash (about one chance in a million per run at 4M identifiers). "
            "identity_components stops rather than link them; please report it"
        )
    type_codes = np.asarray(node_columns["priority"], dtype=np.int64)

    edge_columns = edges.project(
        "src_node_id, dst_node_id, epoch_ms(first_seen_at) as first_seen_ms"
    ).fetchnumpy()
    src = _node_numbers(index, np.asarray(edge_columns["src_node_id"], dtype=np.int64))
    dst = _node_numbers(index, np.asarray(edge_columns["dst_node_id"], dtype=np.int64))
    labels = component_labels(src, dst, len(node_ids))
    unlimited = labels.copy()
    first_seen_ms = np.asarray(edge_columns["first_seen_ms"], dtype=np.int64)
    apply_limits(labels, src, dst, first_seen_ms, type_codes, limits)
    return pd.DataFrame(
        {
            "node_id": node_ids,
            "component_id": _lowest_node_ids(labels, node_ids),
            "split_by_limit": labels != unlimited,
            "unsplit_component_id": _lowest_node_ids(unlimited, node_ids),
        }
    )


def _lowest_node_ids(labels: np.ndarray, node_ids: np.ndarray) -> np.ndarray:
    """The lowest node_id of each node's label: an id for its component that does not depend
    on which other components were read. node_ids is sorted, so it is the node_id of the
    lowest node number with that label."""
    if len(labels) == 0:
        return node_ids.copy()
    first = np.full(int(labels.max()) + 1, len(labels), dtype=np.int64)
    np.minimum.at(first, labels, np.arange(len(labels), dtype=np.int64))
    return node_ids[first[labels]]


def _node_numbers(index: pd.Index, ends: np.ndarray) -> np.ndarray:
    """The number of each edge end: its node_id's position in the sorted `index`.

    A hash table lookup: at a million customers, building the index of 4.1M ids and looking
    up both ends of 5.3M edges took 1.2-1.4 s, against 6.8-8.5 s for np.searchsorted on the
    sorted ids (a binary search per end, in random order).
    """
    numbers = index.get_indexer(ends)
    if (numbers < 0).any():
        raise ValueError(
            f"identity_edges names node_id {int(ends[numbers < 0][0])}, which no usable "
            "identifier of identity_identifiers has (in an incremental run: which the "
            "identifiers read again do not include; `cdp run --full-refresh` rebuilds it)"
        )
    return numbers.astype(np.int64, copy=False)


def component_labels(src: np.ndarray, dst: np.ndarray, node_count: int) -> np.ndarray:
    """Connected-component label of every node 0..node_count-1 (undirected edges)."""
    if node_count == 0:
        return np.zeros(0, dtype=np.int64)
    graph = coo_matrix(
        (np.ones(len(src), dtype=bool), (src, dst)), shape=(node_count, node_count)
    ).tocsr()
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def apply_limits(
    labels: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    first_seen_ms: np.ndarray,
    type_codes: np.ndarray,
    limits: dict[int, int],
) -> list[Refusal]:
    """Split the components that break a limit; relabels `labels` in place (every part of a
    split component gets a label of its own, above all the labels before).

    Only components holding more identifiers of a limited type than its limit are rebuilt,
    with a union-find that adds their edges strongest first (the priority of the weaker end,
    then first seen, then node ids, so the result is deterministic) and refuses a link that
    would break a limit. Type codes are priorities (1 = strongest).
    """
    if not limits or len(labels) == 0:
        return []
    component_count = int(labels.max()) + 1
    violating = np.zeros(component_count, dtype=bool)
    for code, limit in limits.items():
        violating |= np.bincount(labels[type_codes == code], minlength=component_count) > limit
    if not violating.any():
        return []
    in_violation = violating[labels]
    members = np.flatnonzero(in_violation)
    local = np.full(len(labels), -1, dtype=np.int64)
    local[members] = np.arange(len(members))
    subset = np.flatnonzero(in_violation[src])
    edge_rank = np.maximum(type_codes[src[subset]], type_codes[dst[subset]])
    order = subset[np.lexsort((dst[subset], src[subset], first_seen_ms[subset], edge_rank))]
    codes = sorted(limits)
    counts = [(type_codes[members] == code).astype(np.int64).tolist() for code in codes]
    caps = [limits[code] for code in codes]
    limited = list(zip(counts, caps))
    member_codes = type_codes[members].tolist()
    parent = list(range(len(members)))

    refusals = []
    for a, b in zip(local[src[order]].tolist(), local[dst[order]].tolist()):
        root_a = a
        while parent[root_a] != root_a:  # find, with path halving
            parent[root_a] = parent[parent[root_a]]
            root_a = parent[root_a]
        root_b = b
        while parent[root_b] != root_b:
            parent[root_b] = parent[parent[root_b]]
            root_b = parent[root_b]
        if root_a == root_b:
            continue
        for count, cap in limited:
            if count[root_a] + count[root_b] > cap:
                break
        else:
            parent[root_b] = root_a
            for count, _ in limited:
                count[root_a] += count[root_b]
            continue
        broken = tuple(
            (code, count[root_a] + count[root_b], cap)
            for code, (count, cap) in zip(codes, limited)
            if count[root_a] + count[root_b] > cap
        )
        weaker, other = (b, a) if member_codes[b] >= member_codes[a] else (a, b)
        refusals.append(Refusal(int(members[weaker]), int(members[other]), broken))
    roots = []
    for node in range(len(members)):
        root = node
        while parent[root] != root:
            root = parent[root]
        roots.append(root)
    _, new_labels = np.unique(np.asarray(roots, dtype=np.int64), return_inverse=True)
    labels[members] = component_count + new_labels
    return refusals
