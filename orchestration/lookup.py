"""Read-side queries for the command line, on the published copy of the warehouse."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from orchestration.identifiers import IDENTIFIER_TYPES, normalize
from orchestration.warehouse import connect_published

RECENT_EVENTS = 10
CONSENT_CHANNELS = ("email", "sms")

PROFILE_FIELDS = ("email", "phone", "company_name", "lifecycle_stage")
TRAIT_FIELDS = (
    "first_seen_at",
    "last_seen_at",
    "session_count",
    "page_view_count",
    "event_count",
    "order_count",
    "lifetime_revenue",
    "average_order_value",
    "last_order_at",
    "days_since_last_order",
    "products_bought",
    "last_cart_abandoned_at",
    "rfm_recency_score",
    "rfm_frequency_score",
    "rfm_monetary_score",
    "purchase_propensity",
    "open_deal_count",
    "pipeline_value",
    "open_ticket_count",
)


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


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params)
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row)) for row in cursor.fetchall()]


def _card(con: duckdb.DuckDBPyConnection, customer_id: str) -> dict[str, Any]:
    """Profile (every trait of cdp.customers), consent per channel, identifiers, segments and
    the most recent events."""
    rows = _rows(con, "select * from cdp.customers where customer_id = ?", [customer_id])
    profile = rows[0] if rows else {"customer_id": customer_id}
    consent = {}
    for channel in CONSENT_CHANNELS:
        consent[channel] = {
            "consent": profile.pop(f"{channel}_consent", None),
            "consent_changed_at": profile.pop(f"{channel}_consent_changed_at", None),
            "consent_source": profile.pop(f"{channel}_consent_source", None),
            "contactable": profile.pop(f"is_{channel}_contactable", None),
        }
    return {
        "profile": profile,
        "consent": consent,
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
            "select event_at, message_type, coalesce(event_name, page_name) as name, "
            "order_revenue, session_id "
            "from cdp.customer_events where customer_id = ? "
            "order by event_at desc, message_id desc limit ?",
            [customer_id, RECENT_EVENTS],
        ),
    }


def format_card(card: dict[str, Any]) -> str:
    """The card as text; times in UTC."""
    profile = card["profile"]
    name = " ".join(p for p in (profile.get("first_name"), profile.get("last_name")) if p)
    lines = [f"Customer {profile['customer_id']}" + (f"  {name}" if name else "")]
    lines += _fields(profile, PROFILE_FIELDS)
    lines.append("Consent")
    for channel, state in card["consent"].items():
        reach = "may be contacted" if state["contactable"] else "may not be contacted"
        if state["consent"]:
            since = f" since {_show(state['consent_changed_at'])} ({state['consent_source']})"
            lines.append(f"  {channel:<28} {state['consent']}{since}; {reach}")
        else:
            lines.append(f"  {channel:<28} no signal; {reach}")
    lines.append("Traits")
    lines += _fields(profile, TRAIT_FIELDS)
    lines.append(f"Identifiers ({len(card['identifiers'])})")
    for row in card["identifiers"]:
        lines.append(f"  {row['identifier_type']:<15} {row['identifier_value']}")
    lines.append(f"Segments ({len(card['segments'])})")
    for row in card["segments"]:
        lines.append(f"  {row['segment_name']:<28} since {_show(row['entered_at'])}")
    lines.append(f"Recent events (newest {RECENT_EVENTS})")
    for row in card["recent_events"]:
        revenue = f"  {row['order_revenue']:.2f}" if row["order_revenue"] is not None else ""
        lines.append(
            f"  {_show(row['event_at'])}  {row['message_type']:<9} {row['name'] or ''}{revenue}"
        )
    return "\n".join(lines)


def _fields(profile: dict[str, Any], fields: tuple[str, ...]) -> list[str]:
    return [
        f"  {field:<28} {_show(profile[field])}"
        for field in fields
        if profile.get(field) is not None and profile.get(field) != []
    ]


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, datetime):
        return (value.astimezone(UTC) if value.tzinfo else value).strftime("%Y-%m-%d %H:%M")
    return str(value)


def segment_overview(warehouse: Path) -> list[dict[str, Any]]:
    """Every segment with its size and who entered and exited in the latest build, and when
    the build before it was (None for the first)."""
    with connect_published(warehouse) as con:
        return _rows(
            con,
            """
            select
                s.segment_name, s.member_count, s.entered_count, s.exited_count, s.owner,
                s.definition, s.description, s.built_at,
                (
                    select max(h.built_at) from cdp.segment_size_history as h
                    where h.segment_name = s.segment_name and h.built_at < s.built_at
                ) as previous_built_at,
            from cdp.segments as s
            order by s.segment_name
            """,
            [],
        )


LATEST_PROPENSITY_RUN_SQL = """
select model_version, status, holdout_auc, baseline, baseline_auc, horizon_days,
    reference_at, holdout_cutoff_at, training_rows, holdout_rows, holdout_positives,
    scored_customers, trained_at, scored_as_of, built_at
from cdp.predictive_model_runs
order by built_at desc
limit 1
"""


def latest_propensity_run(con: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    """The latest row of cdp.predictive_model_runs, or None before the first build."""
    rows = _rows(con, LATEST_PROPENSITY_RUN_SQL, [])
    return rows[0] if rows else None


def propensity_summary(run: dict[str, Any] | None) -> str:
    """One line: the model's holdout AUC against the baseline's, or why there is none."""
    if run is None:
        return "not built yet"
    if run["holdout_auc"] is None:
        return f"not trained: {run['status']}"
    return (
        f"buys within {run['horizon_days']} days: holdout AUC {run['holdout_auc']:.3f} vs "
        f"{run['baseline_auc']:.3f} for {run['baseline']} (model {run['model_version']}, "
        f"trained as of {_show(run['reference_at'])}, scoring as of {_show(run['scored_as_of'])})"
    )
