"""`cdp customer IDENTIFIER --explain`: why a customer's identifiers are together.

Read from the published warehouse: the links between the customer's identifiers with the
first record that made each (file and line, or message id), the links a rule refused, the
identifiers held out by a rule that the customer's records name, and the merges and splits
of the customer's id.
"""

from pathlib import Path
from typing import Any

from orchestration.warehouse import connect_published

LINKS = """
with mine as (
    select identifier_type, identifier_value
    from cdp.customer_identifiers where customer_id = $customer_id
),
nodes as (
    select i.node_id, i.identifier_type, i.identifier_value, r.customer_id
    from identity.identity_identifiers as i
    inner join cdp.customer_identifiers as r
        on i.identifier_type = r.identifier_type and i.identifier_value = r.identifier_value
    where i.node_id is not null
),
touching as (
    select e.*, s.identifier_type as src_type, s.identifier_value as src_value,
        s.customer_id as src_customer_id, d.identifier_type as dst_type,
        d.identifier_value as dst_value, d.customer_id as dst_customer_id
    from identity.identity_edges as e
    inner join nodes as s on e.src_node_id = s.node_id
    inner join nodes as d on e.dst_node_id = d.node_id
    where s.customer_id = $customer_id or d.customer_id = $customer_id
)
select
    src_type, src_value, dst_type, dst_value, src_customer_id, dst_customer_id, is_allowed,
    record_count, first_seen_at, first_record_key, first_source_file, first_source_line,
    h_src.detail as src_refused_detail, h_dst.detail as dst_refused_detail
from touching as t
left join identity.identifiers_held_out as h_src
    on h_src.rule = 'per_type_limit'
    and t.src_type = h_src.identifier_type and t.src_value = h_src.identifier_value
left join identity.identifiers_held_out as h_dst
    on h_dst.rule = 'per_type_limit'
    and t.dst_type = h_dst.identifier_type and t.dst_value = h_dst.identifier_value
order by first_seen_at, src_type, src_value, dst_type, dst_value
"""

HELD_OUT = """
with mine as (
    select distinct o.record_key
    from identity.identity_occurrences as o
    inner join cdp.customer_identifiers as c
        on o.identifier_type = c.identifier_type and o.identifier_value = c.identifier_value
    where c.customer_id = $customer_id
)
select
    h.identifier_type, h.identifier_value, h.rule, h.detail,
    count(distinct o.record_key) as record_count,
    arg_min(o.record_key, (o.seen_at, o.record_key)) as first_record_key,
    arg_min(o.source_file, (o.seen_at, o.record_key)) as first_source_file,
    arg_min(o.source_line, (o.seen_at, o.record_key)) as first_source_line
from identity.identity_occurrences as o
inner join mine as m on o.record_key = m.record_key
inner join identity.identifiers_held_out as h
    on o.identifier_type = h.identifier_type and o.identifier_value = h.identifier_value
where h.rule in ('blocklist', 'super_node')
group by all
order by h.rule, h.identifier_type, h.identifier_value
"""

HISTORY = """
select change, merged_customer_id, surviving_customer_id, changed_at,
    linking_identifier_type, linking_identifier_value, linking_record_key, reason,
    identifier_count
from cdp.customer_merges
where merged_customer_id = $customer_id or surviving_customer_id = $customer_id
order by changed_at, change, merged_customer_id
"""


def explain_customers(warehouse: Path, customer_ids: list[str]) -> list[dict[str, Any]]:
    """An explanation for each customer id, in the same order."""
    if not customer_ids:
        return []
    with connect_published(warehouse) as con:
        return [explain_customer(con, customer_id) for customer_id in customer_ids]


def explain_customer(con, customer_id: str) -> dict[str, Any]:
    links, refused = [], []
    for row in _rows(con, LINKS, customer_id):
        ends = [
            {"identifier_type": row["src_type"], "identifier_value": row["src_value"]},
            {"identifier_type": row["dst_type"], "identifier_value": row["dst_value"]},
        ]
        record = {
            "record_count": row["record_count"],
            "first_seen_at": row["first_seen_at"],
            "first_record": row["first_record_key"],
            "source_file": row["first_source_file"],
            "source_line": row["first_source_line"],
        }
        if row["is_allowed"] and row["src_customer_id"] == row["dst_customer_id"]:
            links.append({"identifiers": ends, **record})
            continue
        mine_first = row["src_customer_id"] == customer_id
        other_customer = row["dst_customer_id"] if mine_first else row["src_customer_id"]
        refused.append(
            {
                "identifiers": ends if mine_first else ends[::-1],
                "other_customer_id": other_customer if other_customer != customer_id else None,
                "rule": "per_type_limit" if row["is_allowed"] else "never_link",
                "detail": _limit_note(row)
                if row["is_allowed"]
                else f"{row['src_type']} and {row['dst_type']} never link (never_link rule)",
                **record,
            }
        )
    held_out = [
        {
            "identifier_type": row["identifier_type"],
            "identifier_value": row["identifier_value"],
            "rule": row["rule"],
            "detail": row["detail"],
            "record_count": row["record_count"],
            "first_record": row["first_record_key"],
            "source_file": row["first_source_file"],
            "source_line": row["first_source_line"],
        }
        for row in _rows(con, HELD_OUT, customer_id)
    ]
    return {
        "customer_id": customer_id,
        "links": links,
        "refused_links": refused,
        "held_out": held_out,
        "history": _rows(con, HISTORY, customer_id),
    }


def _limit_note(row: dict[str, Any]) -> str:
    """The refusal note (identifiers_held_out, per_type_limit) about this very link."""
    for weaker, other in (("src", "dst"), ("dst", "src")):
        prefix = f"not linked to {row[f'{other}_type']}:{row[f'{other}_value']}:"
        for note in (row[f"{weaker}_refused_detail"] or "").split("; "):
            if note.startswith(prefix):
                return note
    return row["src_refused_detail"] or row["dst_refused_detail"] or "refused by a per-type limit"


def _rows(con, sql: str, customer_id: str) -> list[dict[str, Any]]:
    cursor = con.execute(sql, {"customer_id": customer_id})
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row)) for row in cursor.fetchall()]


def format_explanation(explanation: dict[str, Any]) -> str:
    links = explanation["links"]
    lines = [f"Why these identifiers are together ({len(links)} links, first record of each)"]
    if not links:
        lines.append("  no links: a customer of one identifier")
    for link in links:
        lines.append(f"  {_pair(link['identifiers'])}")
        lines.append(f"      {_records(link)}")
    if explanation["refused_links"]:
        lines.append("Links a rule refused")
        for link in explanation["refused_links"]:
            other = link["other_customer_id"]
            lines.append(
                f"  {_pair(link['identifiers'])}" + (f"  (belongs to {other})" if other else "")
            )
            lines.append(f"      {link['rule']}: {link['detail']}")
            lines.append(f"      {_records(link)}")
    if explanation["held_out"]:
        lines.append("Held out by a rule (named in this customer's records, never linked)")
        for item in explanation["held_out"]:
            lines.append(
                f"  {item['identifier_type']}:{item['identifier_value']}  "
                f"{item['rule']}: {item['detail']}"
            )
            lines.append(f"      {_records(item)}")
    if explanation["history"]:
        lines.append("Merges and splits")
        for change in explanation["history"]:
            lines.append(f"  {_when(change['changed_at'])}  {change['change']}: {change['reason']}")
    return "\n".join(lines)


def _pair(identifiers: list[dict[str, str]]) -> str:
    return " -- ".join(f"{i['identifier_type']}:{i['identifier_value']}" for i in identifiers)


def _records(item: dict[str, Any]) -> str:
    count = item["record_count"]
    where = f"{item['source_file']} line {item['source_line']}"
    return f"{count} record{'s' if count != 1 else ''}; first {item['first_record']} ({where})" + (
        f" at {_when(item['first_seen_at'])}" if item.get("first_seen_at") else ""
    )


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if hasattr(value, "strftime") else str(value)
