"""The connected components and per-type limits of identity_components.py, checked against a
reference union-find on random graphs, long chains and stars (hypothesis)."""

import importlib.util

import duckdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestration.paths import DBT_PROJECT_DIR


def load_model(name: str):
    path = DBT_PROJECT_DIR / "models" / "identity" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"test_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


components = load_model("identity_components")


def reference_partition(node_count: int, edges: list[tuple[int, int]]) -> list[int]:
    """Each node's smallest fellow member, by a plain union-find."""
    parent = list(range(node_count))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    smallest: dict[int, int] = {}
    for node in range(node_count):
        smallest.setdefault(find(node), node)
    return [smallest[find(node)] for node in range(node_count)]


def partition(labels: np.ndarray) -> list[int]:
    """Labels as each node's smallest fellow member, comparable across labelings."""
    smallest: dict[int, int] = {}
    for node, label in enumerate(labels.tolist()):
        smallest.setdefault(label, node)
    return [smallest[label] for label in labels.tolist()]


def labels_of(node_count: int, edges: list[tuple[int, int]]) -> np.ndarray:
    src = np.array([a for a, _ in edges], dtype=np.int64)
    dst = np.array([b for _, b in edges], dtype=np.int64)
    return components.component_labels(src, dst, node_count)


@st.composite
def random_graphs(draw):
    node_count = draw(st.integers(1, 80))
    node = st.integers(0, node_count - 1)
    edges = draw(st.lists(st.tuples(node, node), max_size=160))
    return node_count, edges


@st.composite
def chains(draw):
    """Chains whose nodes are numbered in a random order (one anonymous id per visit)."""
    lengths = draw(st.lists(st.integers(1, 400), min_size=1, max_size=5))
    order = draw(st.permutations(range(sum(lengths))))
    edges, start = [], 0
    for length in lengths:
        run = order[start : start + length]
        edges += [(run[i], run[i + 1]) for i in range(length - 1)]
        start += length
    return sum(lengths), edges


@st.composite
def stars(draw):
    """Stars (one identifier named with many), some of them joined leaf to leaf."""
    sizes = draw(st.lists(st.integers(1, 200), min_size=1, max_size=6))
    edges, start = [], 0
    for size in sizes:
        edges += [(start, start + leaf) for leaf in range(1, size + 1)]
        start += size + 1
    joins = draw(
        st.lists(st.tuples(st.integers(0, start - 1), st.integers(0, start - 1)), max_size=3)
    )
    return start, edges + joins


@settings(max_examples=200, deadline=None)
@given(random_graphs())
def test_components_of_random_graphs_equal_a_reference_union_find(graph):
    node_count, edges = graph
    assert partition(labels_of(node_count, edges)) == reference_partition(node_count, edges)


@settings(max_examples=50, deadline=None)
@given(chains())
def test_components_of_long_chains_equal_a_reference_union_find(graph):
    node_count, edges = graph
    assert partition(labels_of(node_count, edges)) == reference_partition(node_count, edges)


@settings(max_examples=50, deadline=None)
@given(stars())
def test_components_of_stars_equal_a_reference_union_find(graph):
    node_count, edges = graph
    assert partition(labels_of(node_count, edges)) == reference_partition(node_count, edges)


def test_a_chain_of_a_hundred_thousand_identifiers_is_one_component():
    order = np.random.default_rng(3).permutation(100_000)
    labels = components.component_labels(order[:-1], order[1:], 100_000)
    assert len(set(labels.tolist())) == 1


# Per-type limits: type codes are priorities; code 1 (user_id) may appear once per customer.
TYPE_CODES = st.sampled_from([1, 2, 5])
LIMITS = {1: 1}


@st.composite
def typed_graphs(draw):
    node_count, edges = draw(random_graphs())
    edges = [(min(a, b), max(a, b)) for a, b in edges if a != b]
    edges = sorted(set(edges))
    types = draw(st.lists(TYPE_CODES, min_size=node_count, max_size=node_count))
    first_seen = draw(st.lists(st.integers(0, 5), min_size=len(edges), max_size=len(edges)))
    return node_count, edges, types, first_seen


def limited(node_count, edges, types, first_seen, order=None):
    order = list(range(len(edges))) if order is None else order
    src = np.array([edges[i][0] for i in order], dtype=np.int64)
    dst = np.array([edges[i][1] for i in order], dtype=np.int64)
    codes = np.array(types, dtype=np.int64)
    seen = np.array([first_seen[i] for i in order], dtype=np.int64)
    labels = components.component_labels(src, dst, node_count)
    refusals = components.apply_limits(labels, src, dst, seen, codes, LIMITS)
    return labels, refusals


@settings(max_examples=300, deadline=None)
@given(typed_graphs())
def test_limited_customers_respect_the_limit_and_refuse_only_links_that_would_break_it(graph):
    node_count, edges, types, first_seen = graph
    labels, refusals = limited(node_count, edges, types, first_seen)
    groups: dict[int, set[int]] = {}
    for node, label in enumerate(labels.tolist()):
        groups.setdefault(label, set()).add(node)
    user_ids = {label: sum(types[n] == 1 for n in group) for label, group in groups.items()}
    assert all(count <= 1 for count in user_ids.values())
    # Every customer is connected by links inside it, and refines a connected component.
    unlimited = partition(labels_of(node_count, edges))
    for group in groups.values():
        inside = [(a, b) for a, b in edges if a in group and b in group]
        nodes = sorted(group)
        index = {n: i for i, n in enumerate(nodes)}
        local = reference_partition(len(nodes), [(index[a], index[b]) for a, b in inside])
        assert len(set(local)) == 1
        assert len({unlimited[n] for n in group}) == 1
    # A link between two customers exists only because joining them would break the limit.
    for a, b in edges:
        if labels[a] != labels[b]:
            assert user_ids[labels[a]] + user_ids[labels[b]] > 1
    assert {(min(r.weaker, r.other), max(r.weaker, r.other)) for r in refusals} <= set(edges)


@settings(max_examples=100, deadline=None)
@given(typed_graphs(), st.randoms())
def test_limited_customers_do_not_depend_on_the_order_edges_arrive_in(graph, random):
    node_count, edges, types, first_seen = graph
    order = list(range(len(edges)))
    random.shuffle(order)
    first, _ = limited(node_count, edges, types, first_seen)
    shuffled, _ = limited(node_count, edges, types, first_seen, order)
    assert partition(first) == partition(shuffled)


def test_a_shared_device_joins_the_user_it_was_seen_with_first():
    # 0 = user_id u1, 1 = user_id u2, 2 = anonymous_id shared by both; u2 was seen on it first.
    types = [1, 1, 5]
    edges = [(0, 2), (1, 2)]
    labels, refusals = limited(3, edges, types, first_seen=[20, 10])
    assert labels[1] == labels[2] != labels[0]
    assert [(r.weaker, r.other, r.broken) for r in refusals] == [(2, 0, ((1, 2, 1),))]


def test_resolve_components_reads_duckdb_relations_and_applies_the_limits():
    con = duckdb.connect()
    con.execute(
        "create table nodes as select * from (values (3, 2, 'email', 'a@x.com'), "
        "(0, 1, 'user_id', 'u1'), (2, 5, 'anonymous_id', 'd1'), (1, 1, 'user_id', 'u2'), "
        "(4, 1, 'user_id', 'u3'), (5, 5, 'anonymous_id', 'd3')) "
        "v(node_id, priority, identifier_type, identifier_value)"
    )
    con.execute(
        "create table edges as select * from (values (0, 2, timestamptz '2026-01-01'), "
        "(1, 2, timestamptz '2026-02-01'), (0, 3, timestamptz '2026-03-01'), "
        "(4, 5, timestamptz '2026-01-01')) "
        "v(src_node_id, dst_node_id, first_seen_at)"
    )
    con.execute(
        "create table types as select * from (values (1, 'user_id', 1), (2, 'email', null), "
        "(5, 'anonymous_id', null)) v(priority, identifier_type, max_per_customer)"
    )
    frame = components.resolve_components(
        con.table("nodes"), con.table("edges"), con.table("types")
    )
    assert list(frame.columns) == [
        "node_id", "component_id", "split_by_limit", "unsplit_component_id"
    ]  # fmt: skip
    labels = frame.set_index("node_id")["component_id"]
    # The device d1 was seen with u1 first: u2's later link to it is refused. A component's
    # id is its lowest node_id, after the limit and before it.
    assert labels.to_dict() == {0: 0, 1: 1, 2: 0, 3: 0, 4: 4, 5: 4}
    unsplit = frame.set_index("node_id")["unsplit_component_id"]
    assert unsplit.to_dict() == {0: 0, 1: 0, 2: 0, 3: 0, 4: 4, 5: 4}
    # u1 and u2 were one component that the limit split; u3's stayed whole.
    split = frame.set_index("node_id")["split_by_limit"]
    assert split.to_dict() == {0: True, 1: True, 2: True, 3: True, 4: False, 5: False}


def test_resolve_components_takes_any_distinct_node_ids_and_breaks_ties_in_their_order():
    # Node ids are hashes (macro identity_node_id): far apart, negative or not, in any order.
    # u1 and u2 (limit one user_id) reach the device d1 at the same time: the tie goes to the
    # link with the lower node ids, so renumbering the nodes changes who keeps d1.
    def resolve(u1: int, u2: int, d1: int) -> dict[int, int]:
        con = duckdb.connect()
        con.execute(
            "create table nodes as select * from (values (?, 1), (?, 1), (?, 5)) "
            "v(node_id, priority)",
            [u2, u1, d1],
        )
        con.execute(
            "create table edges as select * from (values (least(?, ?), greatest(?, ?), "
            "timestamptz '2026-01-01'), (least(?, ?), greatest(?, ?), timestamptz '2026-01-01')) "
            "v(src_node_id, dst_node_id, first_seen_at)",
            [u1, d1, u1, d1, u2, d1, u2, d1],
        )
        con.execute(
            "create table types as select * from (values (1, 1), (5, null)) "
            "v(priority, max_per_customer)"
        )
        frame = components.resolve_components(
            con.table("nodes"), con.table("edges"), con.table("types")
        )
        assert sorted(frame["node_id"]) == sorted([u1, u2, d1])
        return dict(zip(frame["node_id"], frame["component_id"], strict=True))

    labels = resolve(u1=-(2**62), u2=7, d1=2**62)
    assert labels[-(2**62)] == labels[2**62] != labels[7]
    labels = resolve(u1=7, u2=-(2**62), d1=2**62)
    assert labels[-(2**62)] == labels[2**62] != labels[7]


def test_resolve_components_refuses_a_node_id_shared_by_two_identifiers():
    con = duckdb.connect()
    con.execute("create table nodes as select * from (values (9, 1), (9, 2)) v(node_id, priority)")
    con.execute(
        "create table edges (src_node_id bigint, dst_node_id bigint, first_seen_at timestamptz)"
    )
    con.execute("create table types (priority int, max_per_customer int)")
    with pytest.raises(ValueError, match="node_id 9 belongs to two identifiers"):
        components.resolve_components(con.table("nodes"), con.table("edges"), con.table("types"))


def test_resolve_components_refuses_an_edge_to_an_unknown_node():
    con = duckdb.connect()
    con.execute("create table nodes as select * from (values (3, 1), (8, 2)) v(node_id, priority)")
    con.execute(
        "create table edges as select * from (values (3, 8, timestamptz '2026-01-01'), "
        "(3, 5, timestamptz '2026-01-01')) v(src_node_id, dst_node_id, first_seen_at)"
    )
    con.execute("create table types (priority int, max_per_customer int)")
    with pytest.raises(ValueError, match="names node_id 5, which no usable identifier"):
        components.resolve_components(con.table("nodes"), con.table("edges"), con.table("types"))


def test_resolve_components_of_an_empty_graph_is_empty():
    con = duckdb.connect()
    con.execute(
        "create table nodes (node_id bigint, priority int, identifier_type varchar, "
        "identifier_value varchar)"
    )
    con.execute(
        "create table edges (src_node_id bigint, dst_node_id bigint, first_seen_at timestamptz)"
    )
    con.execute("create table types (priority int, identifier_type varchar, max_per_customer int)")
    frame = components.resolve_components(
        con.table("nodes"), con.table("edges"), con.table("types")
    )
    assert frame.empty
    assert list(frame.columns) == [
        "node_id", "component_id", "split_by_limit", "unsplit_component_id"
    ]  # fmt: skip
