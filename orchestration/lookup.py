"""Read-side queries for the command line, on the published copy of the warehouse."""

from pathlib import Path
from typing import Any

from orchestration.identifiers import IDENTIFIER_TYPES, normalize
from orchestration.warehouse import connect_published

RECENT_EVENTS = 10


def candidate_identifiers(text: str) -> list[tuple[str, str]]:
    """(type, normalized value) pairs the text may mean: one when typed, several when bare."""
    prefix, separator, rest = text.partition(":")
    if separator and prefix in IDENTIFIER_TYPES:
        value = normalize(prefix, rest)
        return [(prefix, value)] if value else []
    candidates = []
    for identifier_type in IDENTIFIER_TYPES:
        value = normalize(identifier_type, text)
        if value:
            candidates.append((identifier_type, value))
    return candidates


def customer_cards(warehouse: Path, identifier: str) -> list[dict[str, Any]]:
    """Every customer holding an identifier the text may mean, as a card."""
    candidates = candidate_identifiers(identifier)
    if not candidates:
        return []
    with connect_published(warehouse) as con:
        con.execute("create temp table wanted (identifier_type varchar, identifier_value varchar)")
        con.executemany("insert into wanted values (?, ?)", candidates)
        customer_ids = [
            row[0]
            for row in con.execute(
                "select distinct customer_id from cdp.customer_identifiers "
                "join wanted using (identifier_type, identifier_value) order by customer_id"
            ).fetchall()
        ]
        return [_card(con, customer_id) for customer_id in customer_ids]


def _rows(con, sql: str, params: list) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params)
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row)) for row in cursor.fetchall()]


def _card(con, customer_id: str) -> dict[str, Any]:
    profile = _rows(con, "select * from cdp.customers where customer_id = ?", [customer_id])
    return {
        "profile": profile[0] if profile else {"customer_id": customer_id},
        "identifiers": _rows(
            con,
            "select identifier_type, identifier_value, first_seen_at, last_seen_at "
            "from cdp.customer_identifiers where customer_id = ? "
            "order by identifier_type, first_seen_at",
            [customer_id],
        ),
        "segments": _rows(
            con,
            "select segment_name, entered_at from cdp.segment_memberships "
            "where customer_id = ? order by segment_name",
            [customer_id],
        ),
        "recent_events": _rows(
            con,
            "select event_at, message_type, coalesce(event_name, page_name) as name, order_revenue "
            "from cdp.customer_events where customer_id = ? order by event_at desc limit ?",
            [customer_id, RECENT_EVENTS],
        ),
    }


def format_card(card: dict[str, Any]) -> str:
    profile = card["profile"]
    name = " ".join(p for p in (profile.get("first_name"), profile.get("last_name")) if p)
    lines = [f"Customer {profile['customer_id']}" + (f"  {name}" if name else "")]
    fields = [
        "email",
        "phone",
        "company_name",
        "lifecycle_stage",
        "is_unsubscribed_from_email",
        "first_seen_at",
        "last_seen_at",
        "event_count",
        "page_view_count",
        "order_count",
        "lifetime_revenue",
        "average_order_value",
        "last_order_at",
        "last_cart_activity_at",
        "open_deal_count",
        "pipeline_value",
        "open_ticket_count",
    ]
    for field in fields:
        if profile.get(field) is not None:
            lines.append(f"  {field:<28} {_show(profile[field])}")
    lines.append(f"Identifiers ({len(card['identifiers'])})")
    for row in card["identifiers"]:
        lines.append(f"  {row['identifier_type']:<15} {row['identifier_value']}")
    lines.append("Segments: " + (", ".join(r["segment_name"] for r in card["segments"]) or "none"))
    lines.append(f"Recent events (newest {RECENT_EVENTS})")
    for row in card["recent_events"]:
        revenue = f"  {row['order_revenue']:.2f}" if row["order_revenue"] is not None else ""
        lines.append(
            f"  {_show(row['event_at'])}  {row['message_type']:<9} {row['name'] or ''}{revenue}"
        )
    return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def segment_sizes(warehouse: Path) -> list[dict[str, Any]]:
    with connect_published(warehouse) as con:
        return _rows(
            con,
            "select segment_name, member_count, owner, description, built_at "
            "from cdp.segments order by segment_name",
            [],
        )
