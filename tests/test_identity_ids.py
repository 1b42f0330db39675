"""Customer id assignment (identity_registry.py) over simulated runs, checked with hypothesis.

Each run draws which identifiers are usable, held out or gone and how the usable ones group
into components; registry_changes runs on an in-memory DuckDB and its rows are appended, as
the incremental dbt model does. After every run the ids must be one per customer, stable for
unchanged customers, never reused once gone, and a merge keeps the id created first; and
registry_changes limited to the touched identifiers must give the same rows.
"""

import importlib.util
from datetime import UTC, datetime, timedelta

import duckdb
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestration.paths import DBT_PROJECT_DIR

spec = importlib.util.spec_from_file_location(
    "test_identity_registry_model", DBT_PROJECT_DIR / "models" / "identity" / "identity_registry.py"
)
registry = importlib.util.module_from_spec(spec)
spec.loader.exec_module(registry)

GONE, HELD_OUT, USABLE = 0, 1, 2
START = datetime(2026, 1, 1, tzinfo=UTC)


@st.composite
def histories(draw):
    count = draw(st.integers(2, 9))
    first_seen = draw(st.lists(st.integers(0, 10_000), min_size=count, max_size=count, unique=True))
    runs = draw(
        st.lists(
            st.tuples(
                st.lists(
                    st.sampled_from([GONE, HELD_OUT, USABLE, USABLE, USABLE]),
                    min_size=count,
                    max_size=count,
                ),
                st.lists(st.integers(0, 3), min_size=count, max_size=count),
            ),
            min_size=1,
            max_size=5,
        )
    )
    return first_seen, runs


def run_once(con, first_seen, states, groups, run_index, before=None) -> dict[str, str]:
    """One run: write the model inputs, append registry_changes; return identifier -> id.

    before: the previous run's (states, groups), None for the first run. When no identifier
    is gone since (the model reads every identifier then), registry_changes limited to the
    touched identifiers (those not in a component with exactly the identifiers of the one
    they were in) must give the same rows as reading every identifier."""
    has_previous = before is not None
    usable = [i for i, state in enumerate(states) if state == USABLE]
    node_of = {identifier: node for node, identifier in enumerate(usable)}
    present = [i for i, state in enumerate(states) if state != GONE]
    identifiers = pd.DataFrame(
        {
            "node_id": pd.array([node_of.get(i) for i in present], dtype="Int64"),
            "identifier_type": pd.Series(["anonymous_id"] * len(present), dtype="str"),
            "identifier_value": pd.Series([f"a{i}" for i in present], dtype="str"),
            "priority": pd.Series([5] * len(present), dtype="int64"),
            "first_seen_at": pd.Series(
                [START + timedelta(seconds=first_seen[i]) for i in present],
                dtype="datetime64[us, UTC]",
            ),
            "held_out_rule": pd.Series(
                [None if states[i] == USABLE else "blocklist" for i in present], dtype="str"
            ),
            "held_out_detail": pd.Series(
                [None if states[i] == USABLE else "test" for i in present], dtype="str"
            ),
        }
    )
    components = pd.DataFrame(
        {
            "node_id": pd.Series([node_of[i] for i in usable], dtype="int64"),
            "component_id": pd.Series([groups[i] for i in usable], dtype="int64"),
        }
    )
    edges = []
    for group in set(components["component_id"]):
        members = [node_of[i] for i in usable if groups[i] == group]
        edges += [
            (a, b, True, START, f"event:m{a}-{b}", "events.jsonl", 1)
            for a, b in zip(members, members[1:])
        ]
    edge_frame = pd.DataFrame(
        edges,
        columns=[
            "src_node_id",
            "dst_node_id",
            "is_allowed",
            "first_seen_at",
            "first_record_key",
            "first_source_file",
            "first_source_line",
        ],
    ).astype(
        {
            "src_node_id": "int64",
            "dst_node_id": "int64",
            "is_allowed": bool,
            "first_seen_at": "datetime64[us, UTC]",
            "first_record_key": "str",
            "first_source_file": "str",
            "first_source_line": "int64",
        }
    )
    for name, frame in (("ids", identifiers), ("comps", components), ("links", edge_frame)):
        con.register("model_input", frame)
        con.execute(f"create or replace table {name} as select * from model_input")
        con.unregister("model_input")
    inputs = dict(
        identifiers="select * from ids",
        components="select * from comps",
        edges="select * from links",
        previous="select * from registry" if has_previous else None,
        changed_at=START + timedelta(days=run_index + 1),
    )
    con.register("new_rows", registry.registry_changes(con, **inputs))
    con.execute("create or replace table run_rows as select * from new_rows")
    con.unregister("new_rows")
    if has_previous and not any(
        state != GONE and now == GONE for state, now in zip(before[0], states, strict=True)
    ):
        touched = _touched(before, states, groups)
        con.register("touched_input", pd.DataFrame({
            "identifier_type": pd.Series(["anonymous_id"] * len(touched), dtype="str"),
            "identifier_value": pd.Series([f"a{i}" for i in touched], dtype="str"),
        }))  # fmt: skip
        con.execute("create or replace table touched as select * from touched_input")
        con.unregister("touched_input")
        limited = registry.registry_changes(con, **inputs, touched="select * from touched")
        assert sorted(limited.fetchall(), key=repr) == sorted(
            con.execute("select * from run_rows").fetchall(), key=repr
        )
    if has_previous:
        con.execute("insert into registry select * from run_rows")
    else:
        con.execute("create table registry as select * from run_rows")
    latest = con.execute(
        "select identifier_value, customer_id from registry qualify row_number() over "
        "(partition by identifier_value order by changed_at desc) = 1"
    ).fetchall()
    return {value: customer for value, customer in latest if customer is not None}


def _touched(before, states, groups) -> list[int]:
    """The identifiers present now but for those usable before and now, in a component of the
    same identifiers both times: what identity_registry's touched_since reads."""

    def members(states, groups):
        usable = [i for i, state in enumerate(states) if state == USABLE]
        found = {}
        for i in usable:
            found.setdefault(groups[i], set()).add(i)
        return {i: frozenset(found[groups[i]]) for i in usable}

    old, new = members(*before), members(states, groups)
    return [i for i, state in enumerate(states) if state != GONE and old.get(i) != new.get(i)]


@settings(max_examples=40, deadline=None)
@given(histories())
def test_ids_are_one_per_customer_stable_never_reused_and_the_oldest_survives_a_merge(history):
    first_seen, runs = history
    con = duckdb.connect()
    previous: dict[str, str] = {}  # identifier -> id after the previous run
    retired: set[str] = set()
    created: dict[str, datetime] = {}
    previous_run = None
    for run_index, (states, groups) in enumerate(runs):
        current = run_once(con, first_seen, states, groups, run_index, previous_run)
        previous_run = (states, groups)
        for customer_id, at in con.execute(
            "select customer_id, min(changed_at) from registry "
            "where customer_id is not null group by 1"
        ).fetchall():
            created.setdefault(customer_id, at)
        usable = [i for i, state in enumerate(states) if state == USABLE]
        assert set(current) == {f"a{i}" for i in usable}
        members: dict[int, set[str]] = {}
        for i in usable:
            members.setdefault(groups[i], set()).add(f"a{i}")
        ids = {group: {current[m] for m in names} for group, names in members.items()}
        assert all(len(group_ids) == 1 for group_ids in ids.values()), "one id per customer"
        assert len({next(iter(g)) for g in ids.values()}) == len(ids), (
            "no two customers share an id"
        )
        assert not (set(current.values()) & retired), "an id that disappeared never comes back"
        before: dict[str, set[str]] = {}
        for identifier, customer_id in previous.items():
            before.setdefault(customer_id, set()).add(identifier)
        for group, names in members.items():
            (new_id,) = ids[group]
            old_ids = {previous[n] for n in names if n in previous}
            whole = [p for p in old_ids if before[p] <= names]  # customers entirely inside
            if names in before.values():
                assert new_id == previous[next(iter(names))], "an unchanged customer keeps its id"
            elif len(whole) == len(old_ids) >= 2:
                oldest = min(
                    whole,
                    key=lambda p: (created[p], min(first_seen[int(n[1:])] for n in before[p]), p),
                )
                assert new_id == oldest, "a merge keeps the id created first"
            if not old_ids:
                assert new_id not in created or created[new_id] == START + timedelta(
                    days=run_index + 1
                )
        retired |= set(previous.values()) - set(current.values())
        previous = current
