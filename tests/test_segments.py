"""Segments: the catalog, current members, history across runs, declarative segments and
`cdp segments`, on two real pipeline runs (tests/customer_pipeline.py)."""

import json
import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
import yaml

from orchestration.paths import DBT_PROJECT_DIR
from orchestration.project import DBT_EXECUTABLE
from tests.conftest import run_cdp
from tests.customer_pipeline import DOMAIN


def query(database: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def customer_of(database: Path, identifier_type: str, value: str) -> str:
    return query(
        database,
        "select customer_id from cdp.customer_identifiers "
        "where identifier_type = ? and identifier_value = ?",
        [identifier_type, value],
    )[0][0]


def members(database: Path, segment: str) -> set[str]:
    return {r[0] for r in query(database, f"select customer_id from segments.{segment}")}


def test_the_catalog_lists_every_segment_with_owner_description_and_true_counts(two_runs):
    published = two_runs.second.published
    catalog = {
        r[0]: r[1:]
        for r in query(
            published,
            "select segment_name, owner, description, definition, member_count from cdp.segments",
        )
    }
    project = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())
    assert set(catalog) == set(project["vars"]["segment_models"])
    assert len(catalog) >= 6
    memberships = Counter(
        r[0] for r in query(published, "select segment_name from cdp.segment_memberships")
    )
    for name, (owner, description, _, count) in catalog.items():
        assert owner and description, name
        assert count == memberships[name] == len(members(published, name)), name
    assert {"sql", "declarative"} == {definition for _, _, definition, _ in catalog.values()}
    assert all(count > 0 for *_, count in catalog.values()), catalog


def test_each_segment_holds_the_customers_its_rule_describes(two_runs):
    published = two_runs.second.published

    def where(condition: str) -> set[str]:
        return {
            r[0]
            for r in query(published, f"select customer_id from cdp.customers where {condition}")
        }

    assert members(published, "subscribers_never_purchased") == where(
        "email is not null and coalesce(email_consent, 'opted_in') = 'opted_in' and order_count = 0"
    )
    assert members(published, "likely_buyers_30d") == where("purchase_propensity >= 0.4")
    assert members(published, "lapsing_repeat_buyers") == where(
        "order_count >= 2 and days_since_last_order >= 30"
    )
    assert members(published, "champions") == where(
        "rfm_recency_score >= 4 and rfm_frequency_score >= 4 and rfm_monetary_score >= 4"
    )
    assert members(published, "sms_cart_recovery") == where(
        """phone is not null and sms_consent = 'opted_in' and last_cart_abandoned_at
        > (select max(event_at) from cdp.customer_events) - interval 7 day"""
    )


def test_a_consent_segment_leaves_out_who_opted_out(two_runs):
    published = two_runs.second.published
    bo = customer_of(published, "user_id", "u-bo-latest")  # never ordered, CRM unsubscribed
    assert bo not in members(published, "subscribers_never_purchased")
    opted_out = {
        r[0]
        for r in query(
            published, "select customer_id from cdp.customers where email_consent = 'opted_out'"
        )
    }
    assert opted_out and not opted_out & members(published, "subscribers_never_purchased")


def test_the_declarative_segment_has_the_members_of_the_same_rule_written_in_sql(two_runs):
    published = two_runs.second.published
    by_hand = {
        r[0]
        for r in query(
            published,
            """
            with as_of as (select max(event_at) as at from cdp.customer_events),
            recent as (
                select customer_id,
                    count(*) filter (where event_name = 'Product Viewed') as views,
                    count(*) filter (where event_name = 'Products Searched') as searches,
                from cdp.customer_events, as_of
                where event_at > as_of.at - interval 14 day and event_at <= as_of.at
                group by customer_id
            )
            select c.customer_id
            from cdp.customers as c
            left join recent as r using (customer_id)
            where c.order_count = 0 and (coalesce(r.views, 0) >= 3 or coalesce(r.searches, 0) >= 1)
            """,
        )
    }
    assert by_hand and members(published, "engaged_browsers_14d") == by_hand


# --- history across runs ---------------------------------------------------------------


def changes(database: Path) -> list[tuple]:
    return query(
        database,
        "select segment_name, customer_id, change, changed_at from cdp.segment_membership_changes "
        "order by all",
    )


def test_a_second_run_with_new_data_records_who_entered_and_who_exited(two_runs):
    first, second = two_runs.first.published, two_runs.second.published
    dee = customer_of(second, "email", f"dee.subscriber@{DOMAIN}")
    assert customer_of(first, "email", f"dee.subscriber@{DOMAIN}") == dee
    builds = [
        r[0]
        for r in query(
            second, "select distinct changed_at from cdp.segment_membership_changes order by 1"
        )
    ]
    assert len(builds) == 2
    dee_changes = {
        (segment, change, at == builds[1])
        for segment, customer, change, at in changes(second)
        if customer == dee
    }
    assert ("subscribers_never_purchased", "entered", False) in dee_changes
    assert ("subscribers_never_purchased", "exited", True) in dee_changes
    assert ("high_value_customers", "entered", True) in dee_changes
    latest = {
        r[0]: r[1:]
        for r in query(
            second,
            "select segment_name, entered_count, exited_count, member_count from cdp.segments",
        )
    }
    print("\nsegment sizes after the second run (entered, exited):")
    for name, (entered, exited, size) in sorted(latest.items()):
        print(f"  {name}: {size} (+{entered}, -{exited})")
    assert sum(entered for entered, _, _ in latest.values()) > 1
    assert sum(exited for _, exited, _ in latest.values()) > 1


def test_history_is_appended_never_overwritten_and_sizes_add_up(two_runs):
    first, second = two_runs.first.published, two_runs.second.published
    assert set(changes(first)) <= set(changes(second))
    history = query(
        second,
        "select segment_name, built_at, member_count, entered_count, exited_count "
        "from cdp.segment_size_history order by segment_name, built_at",
    )
    by_segment: dict[str, list[tuple]] = {}
    for name, built_at, size, entered, exited in history:
        by_segment.setdefault(name, []).append((built_at, size, entered, exited))
    for name, builds in by_segment.items():
        assert len(builds) == 2, name
        (_, size_1, entered_1, exited_1), (_, size_2, entered_2, exited_2) = builds
        assert (size_1, entered_1, exited_1) == (size_1, size_1, 0), name
        assert size_2 == size_1 + entered_2 - exited_2, name


def test_members_who_stay_keep_the_time_they_entered(two_runs):
    memberships = "select segment_name, customer_id, entered_at from cdp.segment_memberships"
    before = {(s, c): at for s, c, at in query(two_runs.first.published, memberships)}
    after = {(s, c): at for s, c, at in query(two_runs.second.published, memberships)}
    stayed = before.keys() & after.keys()
    assert stayed and all(before[key] == after[key] for key in stayed)
    new = after.keys() - before.keys()
    assert new and len({after[key] for key in new}) == 1


def test_cdp_segments_shows_sizes_and_who_entered_and_exited_since_the_previous_run(two_runs):
    result = run_cdp(
        "segments", "--warehouse", str(two_runs.warehouse), env=two_runs.env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    expected = query(
        two_runs.second.published,
        "select segment_name, member_count, entered_count, exited_count from cdp.segments",
    )
    lines = {line.split()[0]: line.split()[1:4] for line in result.stdout.splitlines()[2:]}
    for name, size, entered, exited in expected:
        assert lines[name] == [f"{size:,}", f"{entered:,}", f"{exited:,}"], name
    as_json = run_cdp(
        "segments", "--json", "--warehouse", str(two_runs.warehouse), env=two_runs.env, timeout=120
    )
    rows = {r["segment_name"]: r for r in json.loads(as_json.stdout)}
    high_value = rows["high_value_customers"]
    assert high_value["entered_count"] >= 1 and high_value["previous_built_at"] is not None


# --- one dbt run on copies of the project and the warehouse ------------------------------
# It adds declarative test segments (some malformed) to a copy of the dbt project, and runs
# them together with a --full-refresh of the history models, on a copy of the warehouse.

DECLARATIVE = {
    "t_nested": {
        "conditions": {
            "any": [
                {
                    "all": [
                        {
                            "trait": "lifecycle_stage",
                            "op": "in",
                            "value": ["customer", "evangelist"],
                        },
                        {"trait": "last_order_at", "op": "not_within_last_days", "value": 20},
                    ]
                },
                {
                    "all": [
                        {"trait": "company_name", "op": "is_not_null"},
                        {"event": "page", "within_days": 30, "op": ">=", "value": 2},
                        {"event": "Order Completed", "op": "=", "value": 0},
                    ]
                },
            ]
        }
    },
    # Every count has a window: the segment reads only the events of the widest one, and a
    # customer with none there still counts zero.
    "t_windows": {
        "conditions": {
            "all": [
                {"trait": "order_count", "op": ">", "value": 0},
                {"event": "Order Completed", "within_days": 30, "op": "=", "value": 0},
                {"event": "page", "within_days": 7, "op": "<", "value": 3},
            ]
        }
    },
    "t_consent": {
        "conditions": {
            "all": [
                {"trait": "email_consent", "op": "!=", "value": "opted_out"},
                {"trait": "lifecycle_stage", "op": "not_in", "value": ["lead"]},
                {"trait": "last_seen_at", "op": "within_last_days", "value": 10},
                {"trait": "sms_consent", "op": "is_null"},
            ]
        }
    },
}

BY_HAND = {
    "t_nested": """
        with as_of as (select max(event_at) as at from cdp.customer_events),
        counts as (
            select customer_id,
                count(*) filter (
                    where message_type = 'page' and event_at > as_of.at - interval 30 day
                ) as pages,
                count(*) filter (where event_name = 'Order Completed') as orders,
            from cdp.customer_events, as_of
            where event_at <= as_of.at
            group by customer_id
        )
        select c.customer_id from cdp.customers as c, as_of
        left join counts as n on c.customer_id = n.customer_id
        where (c.lifecycle_stage in ('customer', 'evangelist')
               and (c.last_order_at is null or c.last_order_at <= as_of.at - interval 20 day))
           or (c.company_name is not null
               and coalesce(n.pages, 0) >= 2 and coalesce(n.orders, 0) = 0)
    """,
    "t_windows": """
        with as_of as (select max(event_at) as at from cdp.customer_events),
        counts as (
            select customer_id,
                count(*) filter (
                    where event_name = 'Order Completed' and event_at > as_of.at - interval 30 day
                ) as orders,
                count(*) filter (
                    where message_type = 'page' and event_at > as_of.at - interval 7 day
                ) as pages,
            from cdp.customer_events, as_of
            where event_at <= as_of.at
            group by customer_id
        )
        select c.customer_id from cdp.customers as c
        left join counts as n on c.customer_id = n.customer_id
        where c.order_count > 0 and coalesce(n.orders, 0) = 0 and coalesce(n.pages, 0) < 3
    """,
    "t_consent": """
        with as_of as (select max(event_at) as at from cdp.customer_events)
        select c.customer_id from cdp.customers as c, as_of
        where (c.email_consent is null or c.email_consent <> 'opted_out')
          and (c.lifecycle_stage is null or c.lifecycle_stage <> 'lead')
          and c.last_seen_at > as_of.at - interval 10 day and c.last_seen_at <= as_of.at
          and c.sms_consent is null
    """,
}


MALFORMED = {
    "t_bad_op": (
        {"conditions": {"all": [{"trait": "order_count", "op": "between", "value": 3}]}},
        "key meta.conditions.all[0].op: 'between' is not an operator",
    ),
    "t_bad_trait": (
        {"conditions": {"any": [{"trait": "revenue", "op": ">", "value": 3}]}},
        "key meta.conditions.any[0].trait: 'revenue' is not a trait",
    ),
    "t_bad_window": (
        {"conditions": {"all": [{"event": "Order Completed", "within_days": "a week"}]}},
        "key meta.conditions.all[0].within_days: expected a whole number of days",
    ),
    "t_bad_value": (
        {"conditions": {"all": [{"trait": "order_count", "op": ">", "value": "many"}]}},
        "key meta.conditions.all[0].value: trait order_count is a number; 'many' is not",
    ),
    "t_no_conditions": ({"owner": "growth"}, "key meta.conditions: missing"),
}


HISTORY = {
    "changes": "select * from cdp.segment_membership_changes order by all",
    "sizes": "select * from cdp.segment_size_history order by all",
    "models": "select * from cdp.predictive_model_runs order by all",
}


@dataclass
class DbtOnCopies:
    warehouse: Path
    result: subprocess.CompletedProcess
    history_before: dict[str, list[tuple]]


def add_segments(project: Path, definitions: dict[str, dict]) -> None:
    entries = [
        {"name": name, "description": f"test segment {name}", "config": {"meta": meta}}
        for name, meta in definitions.items()
    ]
    (project / "models" / "segments" / "_segments__test.yml").write_text(
        yaml.safe_dump({"version": 2, "models": entries})
    )
    for name in definitions:
        (project / "models" / "segments" / f"{name}.sql").write_text(
            "{{ declarative_segment() }}\n"
        )


@pytest.fixture(scope="module")
def dbt_on_copies(two_runs, tmp_path_factory) -> DbtOnCopies:
    root = tmp_path_factory.mktemp("dbt_copies")
    warehouse = root / "copy.duckdb"
    shutil.copyfile(two_runs.second.published, warehouse)
    project = root / "dbt_project"
    shutil.copytree(
        DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages")
    )
    add_segments(project, DECLARATIVE | {name: meta for name, (meta, _) in MALFORMED.items()})
    before = {name: query(warehouse, sql) for name, sql in HISTORY.items()}
    history_models = ["segment_membership_changes", "segment_size_history", "predictive_model_runs"]
    result = subprocess.run(
        [DBT_EXECUTABLE, "run", "--full-refresh", "--target-path", str(root / "target"),
         "--select", *history_models, *DECLARATIVE, *MALFORMED],
        cwd=project,
        env={**os.environ, "CDP_WAREHOUSE": str(warehouse)},
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    return DbtOnCopies(warehouse, result, before)


def test_a_full_refresh_keeps_the_history_tables(dbt_on_copies):
    assert "OK created sql incremental model cdp.segment_membership_changes" in (
        dbt_on_copies.result.stdout
    )
    before = dbt_on_copies.history_before
    after = {name: query(dbt_on_copies.warehouse, sql) for name, sql in HISTORY.items()}
    for name in HISTORY:
        assert before[name] and set(before[name]) <= set(after[name]), name
    assert after["changes"] == before["changes"]  # nothing changed, so nothing appended
    assert len(after["sizes"]) > len(before["sizes"])
    assert len(after["models"]) == len(before["models"]) + 1


def test_declarative_and_or_conditions_select_what_the_same_sql_selects(dbt_on_copies):
    for name, sql in BY_HAND.items():
        assert f"OK created sql table model segments.{name}" in dbt_on_copies.result.stdout
        expected = {r[0] for r in query(dbt_on_copies.warehouse, sql)}
        assert expected, name
        assert members(dbt_on_copies.warehouse, name) == expected, name


def test_a_malformed_declarative_segment_fails_naming_the_file_the_key_and_the_fix(
    dbt_on_copies,
):
    assert dbt_on_copies.result.returncode != 0
    output = dbt_on_copies.result.stdout
    for name, (_, message) in MALFORMED.items():
        where = f"models/segments/_segments__test.yml, model {name}, {message}"
        assert where in output, (name, output[-3000:])
    assert "use one of =, !=, <, <=, >, >=, in, not_in" in output
    assert "traits are the columns of cdp.customers: customer_id, first_name" in output
