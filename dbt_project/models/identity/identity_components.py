"""Connected components of the identity graph, with per-type limits.

1. Exact connected components of all edges with scipy (one pass, no rounds).
2. Components that break a per-type limit (identifier_types.max_per_customer, e.g. two
   user_ids joined through a shared device) are resolved again by adding their edges one
   by one, strongest first (edge_rank, then first seen), refusing any link that would put
   more identifiers of a limited type in one customer than its limit allows. A refused link
   is reported in refused_detail of the identifier that asked for it.
"""

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def model(dbt, session):
    dbt.config(materialized="table")

    nodes = (
        dbt.ref("identity_identifiers")
        .filter("node_id is not null")
        .project("node_id, identifier_type, identifier_value, priority, max_per_customer")
        .order("node_id")
        .df()
    )
    edges = (
        dbt.ref("identity_edges")
        .project("src_node_id, dst_node_id, edge_rank, epoch_ms(first_seen_at) as first_seen_ms")
        .df()
    )

    node_count = len(nodes)
    src = edges["src_node_id"].to_numpy(dtype=np.int64)
    dst = edges["dst_node_id"].to_numpy(dtype=np.int64)
    graph = coo_matrix(
        (np.ones(len(src), dtype=np.int8), (src, dst)), shape=(node_count, node_count)
    ).tocsr()
    _, labels = connected_components(graph, directed=False)
    refused = np.full(node_count, None, dtype=object)

    limits = nodes["max_per_customer"].to_numpy()
    types = nodes["identifier_type"].to_numpy()
    limited_types = {t: int(limit) for t, limit in zip(types, limits) if pd.notna(limit)}
    violating = np.zeros(labels.max() + 1 if node_count else 0, dtype=bool)
    for identifier_type, limit in limited_types.items():
        counts = np.bincount(labels[types == identifier_type], minlength=len(violating))
        violating |= counts > limit

    if violating.any():
        in_violation = violating[labels]
        edge_mask = in_violation[src]
        subset = edges[edge_mask].sort_values(
            ["edge_rank", "first_seen_ms", "src_node_id", "dst_node_id"], kind="stable"
        )
        values = nodes["identifier_value"].to_numpy()
        _resolve_with_limits(
            np.flatnonzero(in_violation),
            subset["src_node_id"].to_numpy(),
            subset["dst_node_id"].to_numpy(),
            types,
            nodes["priority"].to_numpy(),
            values,
            limited_types,
            labels,
            refused,
            next_label=labels.max() + 1,
        )

    return pd.DataFrame(
        {"node_id": nodes["node_id"].to_numpy(), "component_id": labels, "refused_detail": refused}
    )


def _resolve_with_limits(
    node_ids, src, dst, types, priorities, values, limits, labels, refused, next_label
):
    """Greedy union-find over one set of components; writes new labels into `labels`."""
    parent = {int(n): int(n) for n in node_ids}
    counts = {int(n): {t: int(types[n] == t) for t in limits} for n in node_ids}

    def find(x):
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for a, b in zip(src.tolist(), dst.tolist()):
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        merged = {t: counts[ra][t] + counts[rb][t] for t in limits}
        broken = [t for t in limits if merged[t] > limits[t]]
        if broken:
            weaker = b if priorities[b] >= priorities[a] else a
            other = a if weaker == b else b
            note = (
                f"not linked to {types[other]}:{values[other]}: the customer would hold "
                + ", ".join(f"{merged[t]} {t} (limit {limits[t]})" for t in broken)
            )
            refused[weaker] = note if refused[weaker] is None else refused[weaker] + "; " + note
            continue
        if ra < rb:
            ra, rb = rb, ra
        parent[rb] = ra
        counts[ra] = merged

    roots = {}
    for n in node_ids.tolist():
        root = find(n)
        if root not in roots:
            roots[root] = next_label
            next_label += 1
        labels[n] = roots[root]
