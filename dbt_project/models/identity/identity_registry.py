"""The persistent customer id registry: an append-only log of which customer each identifier
belongs to. A full refresh never rebuilds it (full_refresh=False); each run appends one row
per identifier whose customer changed, with the change and why:

- new: the identifier gets its first customer (a new id, or an existing customer it joined);
- merge: its customer was merged into another; the id created earlier survives;
- split: a link was cut and its part of a customer now has another id; the part holding the
  customer's earliest-seen identifier keeps the id;
- release: it no longer belongs to anyone (held out by a rule, or no record names it).

A new id is 'cus_' + the first 16 hex digits of md5('<type>:<value>') of the component's
earliest-seen identifier (salted with ':1', ':2'... if that id was ever used), so it is
deterministic; stability comes from the registry: an identifier keeps the id it has, and
"older" means created earlier, so late-arriving history never reshuffles ids.
identity_resolved reads the latest row of every identifier; cdp.customer_merges lists the
merges and splits.
"""

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

COLUMNS = {
    "identifier_type": "str",
    "identifier_value": "str",
    "customer_id": "str",
    "previous_customer_id": "str",
    "change": "str",
    "changed_at": "datetime64[us, UTC]",
    "customer_created_at": "datetime64[us, UTC]",
    "linking_identifier_type": "str",
    "linking_identifier_value": "str",
    "linking_record_key": "str",
    "reason": "str",
}


def model(dbt, session):
    dbt.config(
        materialized="incremental",
        incremental_strategy="append",
        full_refresh=False,
        on_schema_change="append_new_columns",
    )
    previous = str(dbt.this) if dbt.is_incremental else None
    return registry_changes(
        session,
        identifiers=dbt.ref("identity_identifiers").sql_query(),
        components=dbt.ref("identity_components").sql_query(),
        edges=dbt.ref("identity_edges").sql_query(),
        previous=f"select * from {previous}" if previous else None,
        changed_at=datetime.now(UTC),
    )


def registry_changes(
    session, identifiers: str, components: str, edges: str, previous: str | None, changed_at
) -> pd.DataFrame:
    """The registry rows to append: one per identifier whose customer changed.

    identifiers, components, edges and previous are SQL queries (the dbt relations); previous
    is None on the first run.
    """
    current = session.sql(
        f"""
        select i.node_id, i.identifier_type, i.identifier_value, i.priority,
            i.first_seen_at, c.component_id, p.customer_id as previous_customer_id
        from ({identifiers}) as i
        inner join ({components}) as c on i.node_id = c.node_id
        left join ({_latest(previous)}) as p
            on i.identifier_type = p.identifier_type and i.identifier_value = p.identifier_value
        """
    ).df()
    created_rows = session.sql(
        f"""
        select customer_id, min(changed_at) as created_at
        from ({previous or _NOTHING}) where customer_id is not null group by customer_id
        """
    ).df()
    created = pd.Series(
        created_rows["created_at"].to_numpy(), index=created_rows["customer_id"].to_numpy()
    )
    released = session.sql(
        f"""
        select p.identifier_type, p.identifier_value, p.customer_id, i.priority,
            i.held_out_rule, i.held_out_detail
        from ({_latest(previous)}) as p
        left join ({identifiers}) as i
            on p.identifier_type = i.identifier_type and p.identifier_value = i.identifier_value
        where p.customer_id is not null and i.node_id is null
        """
    ).df()

    plan = _plan_ids(current, created)
    current["customer_id"] = current["component_id"].map(plan.customer_of_component)
    changed = current[current["customer_id"] != current["previous_customer_id"].fillna("")]
    moved = changed[changed["previous_customer_id"].notna()]
    parts = [
        _new_rows(changed[changed["previous_customer_id"].isna()]),
        _moved_rows(session, moved, current, plan, released, edges),
        _released_rows(released),
    ]
    parts = [part for part in parts if len(part)]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    frame = frame.reindex(columns=list(COLUMNS))
    frame["changed_at"] = pd.Timestamp(changed_at)
    frame["customer_created_at"] = (
        frame["customer_id"]
        .map(created)
        .astype("datetime64[us, UTC]")
        .fillna(pd.Timestamp(changed_at))
        .where(frame["customer_id"].notna())
    )
    return _typed(frame)


# The registry's columns, for the first run (no previous rows).
_NOTHING = (
    "select "
    + ", ".join(
        f"null::{'timestamptz' if name.endswith('_at') else 'varchar'} as {name}"
        for name in COLUMNS
    )
    + " where false"
)


def _latest(previous: str | None) -> str:
    """Each identifier's latest registry row (its customer now, or NULL when released)."""
    return f"""
        select identifier_type, identifier_value, customer_id
        from ({previous or _NOTHING})
        qualify row_number() over (
            partition by identifier_type, identifier_value order by changed_at desc
        ) = 1
    """


@dataclass(frozen=True)
class _Plan:
    customer_of_component: dict  # component_id -> the customer id it gets this run
    owner_of_previous: dict  # previous customer id -> component holding its oldest part


# (linking identifier type, linking identifier value, linking record key, reason)
Detail = tuple[str | None, str | None, str | None, str]


def _plan_ids(current: pd.DataFrame, created: pd.Series) -> _Plan:
    """Surviving ids for components that own a previous id; new ids for the others."""
    known = current[current["previous_customer_id"].notna()]
    owners = known.sort_values(
        ["previous_customer_id", "first_seen_at", "priority", "identifier_value"], kind="stable"
    ).drop_duplicates("previous_customer_id")
    owners = owners.assign(created_at=owners["previous_customer_id"].map(created))
    survivors = owners.sort_values(
        ["component_id", "created_at", "first_seen_at", "previous_customer_id"], kind="stable"
    ).drop_duplicates("component_id")
    customer_of_component = dict(
        zip(survivors["component_id"].tolist(), survivors["previous_customer_id"].tolist())
    )
    anchors = current[~current["component_id"].isin(customer_of_component)].sort_values(
        ["component_id", "first_seen_at", "priority", "identifier_type", "identifier_value"],
        kind="stable",
    )
    anchors = anchors.drop_duplicates("component_id")
    taken = set(created.index) | set(customer_of_component.values())
    for component, identifier_type, value in zip(
        anchors["component_id"].tolist(),
        anchors["identifier_type"].tolist(),
        anchors["identifier_value"].tolist(),
    ):
        customer_of_component[component] = new_customer_id(identifier_type, value, taken)
    owner_of_previous = dict(
        zip(owners["previous_customer_id"].tolist(), owners["component_id"].tolist())
    )
    return _Plan(customer_of_component, owner_of_previous)


def new_customer_id(identifier_type: str, value: str, taken: set[str]) -> str:
    """'cus_' + md5 of the anchor identifier, salted until it was never used; added to taken."""
    key, salt = f"{identifier_type}:{value}", 0
    while True:
        text = key if salt == 0 else f"{key}:{salt}"
        customer_id = "cus_" + hashlib.md5(text.encode("utf-8")).hexdigest()[:16]
        if customer_id not in taken:
            taken.add(customer_id)
            return customer_id
        salt += 1


def _new_rows(changed: pd.DataFrame) -> pd.DataFrame:
    return changed[["identifier_type", "identifier_value", "customer_id"]].assign(change="new")


def _moved_rows(
    session,
    moved: pd.DataFrame,
    current: pd.DataFrame,
    plan: _Plan,
    released: pd.DataFrame,
    edges: str,
) -> pd.DataFrame:
    """Merge and split rows, each with the link that joined (or was cut) and why."""
    if moved.empty:
        return moved
    owner = moved["previous_customer_id"].map(plan.owner_of_previous)
    moved = moved.assign(change=np.where(owner == moved["component_id"], "merge", "split"))
    involved = set(moved["component_id"]) | set(owner)
    nodes = current[current["component_id"].isin(involved)].set_index("node_id")
    links = _edges_touching(session, edges, nodes.index.to_numpy())
    details = []
    for (change, previous_id, customer_id), group in moved.groupby(
        ["change", "previous_customer_id", "customer_id"], sort=True
    ):
        component = group["component_id"].iloc[0]
        if change == "merge":
            detail = _merge_reason(previous_id, customer_id, component, nodes, links)
        else:
            kept_by = plan.owner_of_previous[previous_id]
            detail = _split_reason(
                previous_id, customer_id, len(group), component, kept_by, nodes, links, released
            )
        details.append((change, previous_id, customer_id, *detail))
    columns = [
        "change",
        "previous_customer_id",
        "customer_id",
        "linking_identifier_type",
        "linking_identifier_value",
        "linking_record_key",
        "reason",
    ]
    return moved[
        ["identifier_type", "identifier_value", "customer_id", "previous_customer_id", "change"]
    ].merge(pd.DataFrame(details, columns=columns), how="left", on=columns[:3])


def _edges_touching(session, edges: str, node_ids: np.ndarray) -> pd.DataFrame:
    name = "identity_registry_nodes"
    session.register(name, pd.DataFrame({"node_id": node_ids.astype(np.int64)}))
    try:
        return session.sql(
            f"""
            select e.src_node_id, e.dst_node_id, e.is_allowed, e.first_seen_at,
                e.first_record_key, e.first_source_file, e.first_source_line
            from ({edges}) as e
            where e.src_node_id in (select node_id from {name})
                or e.dst_node_id in (select node_id from {name})
            """
        ).df()
    finally:
        session.unregister(name)


def _name(nodes: pd.DataFrame, node_id: int) -> str:
    return f"{nodes.at[node_id, 'identifier_type']}:{nodes.at[node_id, 'identifier_value']}"


def _record(link: pd.Series) -> str:
    return f"{link.first_record_key} ({link.first_source_file} line {link.first_source_line})"


def _merge_reason(
    previous_id: str, customer_id: str, component: int, nodes: pd.DataFrame, links: pd.DataFrame
) -> Detail:
    """The most recent link between the merged customer's identifiers and the rest."""
    prev = nodes["previous_customer_id"]
    inside = links[
        links["src_node_id"].isin(nodes.index)
        & links["dst_node_id"].isin(nodes.index)
        & links["is_allowed"]
    ]
    inside = inside[
        (nodes.loc[inside["src_node_id"], "component_id"].to_numpy() == component)
        & (nodes.loc[inside["dst_node_id"], "component_id"].to_numpy() == component)
    ]
    src_in = (prev.loc[inside["src_node_id"]] == previous_id).fillna(False).to_numpy()
    dst_in = (prev.loc[inside["dst_node_id"]] == previous_id).fillna(False).to_numpy()
    bridges = inside[src_in != dst_in].sort_values(
        ["first_seen_at", "src_node_id", "dst_node_id"], ascending=[False, True, True]
    )
    if bridges.empty:
        return None, None, None, f"{previous_id} merged into {customer_id}"
    link = bridges.iloc[0]
    mine, other = (
        (link.src_node_id, link.dst_node_id)
        if prev.get(link.src_node_id) == previous_id
        else (link.dst_node_id, link.src_node_id)
    )
    other_id = prev.get(other)
    reason = (
        f"{previous_id} merged into {customer_id} (the id created earlier): its "
        f"{_name(nodes, mine)} was named with {_name(nodes, other)}"
        f"{f' of {other_id}' if isinstance(other_id, str) else ' (new)'} by {_record(link)}"
    )
    return (
        nodes.at[other, "identifier_type"],
        nodes.at[other, "identifier_value"],
        link.first_record_key,
        reason,
    )


def _split_reason(
    previous_id: str,
    customer_id: str,
    count: int,
    component: int,
    kept_by: int,
    nodes: pd.DataFrame,
    links: pd.DataFrame,
    released: pd.DataFrame,
) -> Detail:
    """Why part of previous_id no longer links to the part that kept the id."""
    kept = set(nodes.index[nodes["component_id"] == kept_by])
    part = set(nodes.index[nodes["component_id"] == component])
    prefix = (
        f"{count} identifiers of {previous_id} (now {customer_id}) no longer link to the part "
        "holding its earliest-seen identifier"
    )
    held = released[
        (released["customer_id"] == previous_id) & released["held_out_rule"].notna()
    ].sort_values(["priority", "identifier_type", "identifier_value"])
    if len(held):
        cut = held.iloc[0]
        return (
            cut["identifier_type"],
            cut["identifier_value"],
            None,
            f"{prefix}: {cut['identifier_type']}:{cut['identifier_value']} is now held out "
            f"({cut['held_out_rule']}: {cut['held_out_detail']})",
        )
    between = links[
        (links["src_node_id"].isin(kept) & links["dst_node_id"].isin(part))
        | (links["src_node_id"].isin(part) & links["dst_node_id"].isin(kept))
    ].sort_values(["first_seen_at", "src_node_id", "dst_node_id"])
    for allowed, rule in ((True, "a per-type limit"), (False, "never_link")):
        cut_links = between[between["is_allowed"] == allowed]
        if len(cut_links):
            link = cut_links.iloc[0]
            outside = link.src_node_id if link.src_node_id in part else link.dst_node_id
            return (
                nodes.at[outside, "identifier_type"],
                nodes.at[outside, "identifier_value"],
                link.first_record_key,
                f"{prefix}: the link {_name(nodes, link.src_node_id)} - "
                f"{_name(nodes, link.dst_node_id)} ({_record(link)}) is refused by {rule}",
            )
    return None, None, None, f"{prefix}: no record links them any more"


def _released_rows(released: pd.DataFrame) -> pd.DataFrame:
    reason = np.where(
        released["held_out_rule"].notna(),
        "held out by "
        + released["held_out_rule"].fillna("").astype(str)
        + ": "
        + released["held_out_detail"].fillna("").astype(str),
        "no record names it any more",
    )
    return pd.DataFrame(
        {
            "identifier_type": released["identifier_type"].to_numpy(),
            "identifier_value": released["identifier_value"].to_numpy(),
            "previous_customer_id": released["customer_id"].to_numpy(),
            "change": "release",
            "reason": reason,
        }
    )


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns of COLUMNS, typed (so that an empty frame still makes the right table)."""
    return pd.DataFrame({name: frame[name].astype(dtype) for name, dtype in COLUMNS.items()})
