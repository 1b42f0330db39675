"""Connected components of the identity graph, with per-type limits.

1. Exact connected components of every allowed edge with scipy: one pass over a sparse
   matrix, no rounds, so a long chain (one anonymous id per visit) costs no more than a star.
2. Components that break a per-type limit (identity_rules.yml max_per_customer, e.g. two
   user_ids joined through a shared device) are resolved again by adding their edges one by
   one, strongest first (edge_rank, then first seen), refusing any link that would give one
   customer more identifiers of a type than its limit. A refused link is reported in
   refused_detail of its weaker end.

`resolve_components` is the whole step, DuckDB relations in and one row per identifier out;
tests/benchmarks/bench_identity.py times it and tests/test_identity_components.py checks it.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def model(dbt, session):
    dbt.config(materialized="table")
    return resolve_components(
        nodes=dbt.ref("identity_identifiers").filter("node_id is not null"),
        edges=dbt.ref("identity_edges").filter("is_allowed"),
        identifier_types=dbt.ref("identity_identifier_types"),
    )


@dataclass(frozen=True)
class Refusal:
    weaker: int  # node that was not linked
    other: int  # node it would have been linked to
    broken: tuple[tuple[int, int, int], ...]  # (type code, count it would reach, limit)


def resolve_components(nodes, edges, identifier_types) -> pd.DataFrame:
    """node_id, component_id, refused_detail for every usable identifier.

    nodes: node_id (dense 0..n-1), priority; edges: src_node_id, dst_node_id, edge_rank,
    first_seen_at; identifier_types: identifier_type, priority, max_per_customer. Types are
    coded by their priority, which the rules keep unique.
    """
    type_rows = identifier_types.project("priority, identifier_type, max_per_customer").fetchall()
    type_names = {priority: name for priority, name, _ in type_rows}
    limits = {priority: limit for priority, _, limit in type_rows if limit is not None}

    node_columns = nodes.project("node_id, priority").order("node_id").fetchnumpy()
    node_ids = np.asarray(node_columns["node_id"], dtype=np.int64)
    node_count = len(node_ids)
    if not np.array_equal(node_ids, np.arange(node_count)):
        raise ValueError("identity_identifiers.node_id must be dense (0..n-1) for scipy")
    type_codes = np.asarray(node_columns["priority"], dtype=np.int64)

    edge_columns = edges.project(
        "src_node_id, dst_node_id, edge_rank, epoch_ms(first_seen_at) as first_seen_ms"
    ).fetchnumpy()
    src = np.asarray(edge_columns["src_node_id"], dtype=np.int64)
    dst = np.asarray(edge_columns["dst_node_id"], dtype=np.int64)

    labels = component_labels(src, dst, node_count)
    refusals = apply_limits(
        labels,
        src,
        dst,
        np.asarray(edge_columns["edge_rank"], dtype=np.int64),
        np.asarray(edge_columns["first_seen_ms"], dtype=np.int64),
        type_codes,
        limits,
    )
    refused_detail = np.full(node_count, None, dtype=object)
    if refusals:
        involved = sorted({r.weaker for r in refusals} | {r.other for r in refusals})
        names = {
            node_id: f"{identifier_type}:{value}"
            for node_id, identifier_type, value in nodes.filter(
                f"node_id in ({', '.join(map(str, involved))})"
            )
            .project("node_id, identifier_type, identifier_value")
            .fetchall()
        }
        for refusal in refusals:
            note = f"not linked to {names[refusal.other]}: the customer would hold " + ", ".join(
                f"{count} {type_names[code]} (limit {limit})"
                for code, count, limit in refusal.broken
            )
            previous = refused_detail[refusal.weaker]
            refused_detail[refusal.weaker] = note if previous is None else f"{previous}; {note}"
    return pd.DataFrame(
        {
            "node_id": node_ids,
            "component_id": labels.astype(np.int64),
            "refused_detail": pd.array(refused_detail, dtype="string"),
        }
    )


def component_labels(src: np.ndarray, dst: np.ndarray, node_count: int) -> np.ndarray:
    """Connected-component label of every node 0..node_count-1 (undirected edges)."""
    if node_count == 0:
        return np.zeros(0, dtype=np.int64)
    graph = coo_matrix(
        (np.ones(len(src), dtype=np.int8), (src, dst)), shape=(node_count, node_count)
    ).tocsr()
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def apply_limits(
    labels: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    edge_rank: np.ndarray,
    first_seen_ms: np.ndarray,
    type_codes: np.ndarray,
    limits: dict[int, int],
) -> list[Refusal]:
    """Split the components that break a limit; relabels `labels` in place.

    Only components holding more identifiers of a limited type than its limit are rebuilt,
    with a union-find that adds their edges strongest first (edge_rank, first seen, then node
    ids, so the result is deterministic) and refuses a link that would break a limit.
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
    subset = np.flatnonzero(in_violation[src])
    order = subset[np.lexsort((dst[subset], src[subset], first_seen_ms[subset], edge_rank[subset]))]
    members = np.flatnonzero(in_violation)
    parent = {int(n): int(n) for n in members}
    counts = {int(n): {code: int(type_codes[n] == code) for code in limits} for n in members}

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    refusals = []
    for a, b in zip(src[order].tolist(), dst[order].tolist()):
        root_a, root_b = find(a), find(b)
        if root_a == root_b:
            continue
        merged = {code: counts[root_a][code] + counts[root_b][code] for code in limits}
        broken = tuple(
            (code, merged[code], limits[code])
            for code in sorted(limits)
            if merged[code] > limits[code]
        )
        if broken:
            weaker, other = (b, a) if type_codes[b] >= type_codes[a] else (a, b)
            refusals.append(Refusal(weaker, other, broken))
            continue
        parent[root_b] = root_a
        counts[root_a] = merged

    next_label = component_count
    new_labels: dict[int, int] = {}
    for node in members.tolist():
        root = find(node)
        if root not in new_labels:
            new_labels[root] = next_label
            next_label += 1
        labels[node] = new_labels[root]
    return refusals
