"""The whole pipeline on a freshly generated data set, through the real `cdp run`.

Identity is judged against the generator's truth.csv by pairwise precision and recall over
the identifiers that belong to exactly one person (a shared device belongs to two people and
may go to either; junk values belong to nobody and must not be assigned at all).
"""

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from orchestration.assets.dbt import PARSE_STATE
from orchestration.paths import DBT_PROJECT_DIR
from seeds.generator import generate
from tests.conftest import dbt, run_cdp

PEOPLE = 800
END = datetime(2026, 11, 15, tzinfo=UTC)


@dataclass
class Run:
    landing: Path
    warehouse: Path
    published: Path
    env: dict[str, str]
    output: str
    report: object


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("e2e")
    landing = root / "landing"
    report = generate(PEOPLE, seed=7, out=landing, end=END)
    warehouse = root / "warehouse" / "cdp.duckdb"
    env = {"DAGSTER_HOME": str(root / "dagster"), "CDP_WAREHOUSE": "", "CDP_LANDING_DIR": ""}
    result = run_cdp("run", "--landing", str(landing), "--warehouse", str(warehouse), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    snapshot = root / "first_run.duckdb"
    shutil.copyfile(warehouse.with_name("cdp_published.duckdb"), snapshot)
    return Run(landing, warehouse, snapshot, env, result.stdout, report)


def query(database: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def frame(database: Path, sql: str) -> pd.DataFrame:
    with duckdb.connect(str(database), read_only=True) as con:
        return con.execute(sql).df()


def pairs(sizes) -> int:
    return int(sum(n * (n - 1) // 2 for n in sizes))


def test_identity_matches_the_ground_truth_with_perfect_precision(first_run):
    truth = pd.read_csv(first_run.landing / "truth.csv", dtype=str, keep_default_na=False)
    assigned = frame(
        first_run.published,
        "select identifier_type, identifier_value, customer_id from cdp.customer_identifiers",
    )
    owners = truth[truth.person_id != ""].groupby(["identifier_type", "identifier_value"])
    person_count = owners.person_id.nunique()
    single = person_count[person_count == 1].index
    people = truth.set_index(["identifier_type", "identifier_value"]).loc[single, "person_id"]
    people = people[~people.index.duplicated()].rename("person_id").reset_index()

    judged = people.merge(assigned, how="left", on=["identifier_type", "identifier_value"])
    missing = judged.customer_id.isna()
    judged.loc[missing, "customer_id"] = "unassigned:" + judged.loc[missing, "identifier_value"]

    true_pairs = pairs(judged.groupby("person_id").size())
    predicted_pairs = pairs(judged.groupby("customer_id").size())
    correct_pairs = pairs(judged.groupby(["customer_id", "person_id"]).size())
    precision = correct_pairs / predicted_pairs
    recall = correct_pairs / true_pairs
    print(
        f"\nidentity vs truth: {len(judged)} identifiers, {judged.person_id.nunique()} people, "
        f"{assigned.customer_id.nunique()} customers; pairs true {true_pairs}, predicted "
        f"{predicted_pairs}, correct {correct_pairs}; "
        f"precision {precision:.4f}, recall {recall:.4f}"
    )
    assert precision == 1.0
    assert recall >= 0.99


def test_junk_identifiers_are_assigned_to_nobody(first_run):
    truth = pd.read_csv(first_run.landing / "truth.csv", dtype=str, keep_default_na=False)
    junk = truth[truth.person_id == ""][["identifier_type", "identifier_value"]]
    assert len(junk) > 0
    assigned = frame(
        first_run.published,
        "select identifier_type, identifier_value from cdp.customer_identifiers",
    )
    leaked = junk.merge(assigned, on=["identifier_type", "identifier_value"])
    assert leaked.empty, leaked


def test_every_row_read_is_loaded_or_rejected_and_the_counts_reconcile(first_run):
    files = frame(first_run.published, "select * from raw.loaded_files")
    assert (files.rows_read == files.rows_loaded + files.rows_rejected).all()
    loaded = dict(
        query(
            first_run.published,
            "select file_kind, sum(rows_loaded) from raw.loaded_files group by 1",
        )
    )
    for kind, table in [
        ("contacts", "crm_contacts"),
        ("companies", "crm_companies"),
        ("deals", "crm_deals"),
        ("tickets", "crm_tickets"),
        ("events", "events"),
    ]:
        assert query(first_run.published, f"select count(*) from raw.{table}")[0][0] == loaded[kind]
    rejected = query(first_run.published, "select count(*) from raw.rejected_rows")[0][0]
    assert rejected == files.rows_rejected.sum()
    assert rejected == sum(first_run.report.bad_rows.values()) > 0
    reasons = [r[0] for r in query(first_run.published, "select reason from raw.rejected_rows")]
    assert any("invalid JSON" in r for r in reasons)
    assert any("timestamp" in r for r in reasons)


def test_duplicate_messages_are_kept_in_raw_and_removed_from_customer_events(first_run):
    raw_rows, distinct_ids = query(
        first_run.published, "select count(*), count(distinct message_id) from raw.events"
    )[0]
    assert raw_rows > distinct_ids
    assert (
        query(first_run.published, "select count(*) from cdp.customer_events")[0][0] == distinct_ids
    )
    duplicates = f"{raw_rows - distinct_ids:,} duplicate message ids kept in raw.events"
    assert duplicates in first_run.output


def test_segments_hold_the_customers_their_rules_describe(first_run):
    sizes = dict(query(first_run.published, "select segment_name, member_count from cdp.segments"))
    assert {"high_value_customers", "cart_abandoners_7d", "subscribers_never_purchased"} <= set(
        sizes
    )
    assert all(size > 0 for size in sizes.values()), sizes
    members = Counter(
        r[0] for r in query(first_run.published, "select segment_name from cdp.segment_memberships")
    )
    assert dict(members) == sizes
    # Lifetime revenue recomputed from the events, one amount per order id.
    expected = {
        r[0]
        for r in query(
            first_run.published,
            """
            select customer_id from (
                select customer_id, order_id, max(order_revenue) as revenue
                from cdp.customer_events
                where event_name = 'Order Completed' and customer_id is not null
                group by all
            ) group by customer_id having sum(revenue) >= 500
            """,
        )
    }
    actual = {
        r[0]
        for r in query(first_run.published, "select customer_id from segments.high_value_customers")
    }
    assert actual == expected


def test_the_run_ends_with_a_summary_of_loads_customers_segments_and_syncs(first_run):
    customers = query(first_run.published, "select count(*) from cdp.customers")[0][0]
    assert f"Customers  {customers:,}" in first_run.output
    assert "rejected" in first_run.output
    high_value = query(
        first_run.published,
        "select member_count from cdp.segments where segment_name = 'high_value_customers'",
    )[0][0]
    assert f"high_value_customers: {high_value:,}" in first_run.output
    assert f"high_value_customers_file: succeeded, {high_value:,} rows sent" in first_run.output


def replay_exports(folder: Path) -> dict[str, dict]:
    """The destination's state after applying every exported change file in order."""
    state: dict[str, dict] = {}
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            operation = json.loads(line)
            if operation["op"] == "delete":
                state.pop(operation["key"], None)
            else:
                state[operation["key"]] = operation["fields"]
    return state


@pytest.fixture(scope="module")
def second_run(first_run) -> tuple[Run, list[Path]]:
    exports = first_run.warehouse.parent / "exports" / "high_value_customers"
    before = sorted(exports.glob("*.jsonl"))
    result = run_cdp(
        "run",
        "--landing",
        str(first_run.landing),
        "--warehouse",
        str(first_run.warehouse),
        env=first_run.env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return Run(
        first_run.landing,
        first_run.warehouse,
        first_run.warehouse.with_name("cdp_published.duckdb"),
        first_run.env,
        result.stdout,
        first_run.report,
    ), before


def test_running_again_on_the_same_files_loads_nothing_and_sends_nothing(first_run, second_run):
    run, exports_before = second_run
    for table in ["raw.events", "raw.crm_contacts", "raw.rejected_rows", "cdp.customers"]:
        sql = f"select count(*) from {table}"
        assert query(run.published, sql) == query(first_run.published, sql)
    assert "Loaded     0 new or changed files" in run.output
    memberships = (
        "select segment_name, customer_id, entered_at from cdp.segment_memberships order by all"
    )
    assert query(run.published, memberships) == query(first_run.published, memberships)
    exports = first_run.warehouse.parent / "exports" / "high_value_customers"
    assert sorted(exports.glob("*.jsonl")) == exports_before
    last = query(
        run.published,
        "select added, changed, removed from reverse_etl.sync_runs "
        "order by started_at desc limit 1",
    )
    assert last == [(0, 0, 0)]


def test_the_next_run_reuses_the_parse_of_the_project(first_run, second_run, tmp_path):
    """A run keeps dbt's parse state (partial_parse.msgpack) for the next one. It is parsed
    with the run's profile (the warehouse path), so a dbt invocation with the same profile
    and unchanged files skips parsing. The state of a parse with another profile (the start-up
    `dbt parse` of `make run` or of `dagster dev`, with no warehouse path set) made every such
    run parse the whole project again."""
    target = tmp_path / "target"
    target.mkdir()
    shutil.copyfile(DBT_PROJECT_DIR / "target" / PARSE_STATE, target / PARSE_STATE)
    result = dbt(
        "ls", "--select", "customers", "--log-path", str(tmp_path),
        warehouse=first_run.warehouse.resolve(), target=target,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    log = (tmp_path / "dbt.log").read_text()
    assert "Unable to do partial parsing" not in log
    assert "Nothing changed, skipping partial parsing" in log


def test_the_sync_sends_only_what_changed_and_the_destination_matches_the_segment(
    first_run, second_run
):
    run, _ = second_run
    exports = first_run.warehouse.parent / "exports" / "high_value_customers"
    customer = query(
        run.published,
        """
        select c.customer_id, i.identifier_value from cdp.customers c
        join cdp.customer_identifiers i
            on i.customer_id = c.customer_id and i.identifier_type = 'user_id'
        where c.lifetime_revenue < 100 order by c.customer_id limit 1
        """,
    )[0]
    big_order = {
        "type": "track",
        "messageId": "e2e-big-order-1",
        "userId": customer[1],
        "event": "Order Completed",
        "timestamp": "2026-11-14T10:00:00Z",
        "properties": {"order_id": "e2e-order-1", "revenue": 2500.0, "currency": "USD"},
    }
    (first_run.landing / "events" / "late-orders.jsonl").write_text(json.dumps(big_order) + "\n")
    before = set(exports.glob("*.jsonl"))
    result = run_cdp(
        "run",
        "--landing",
        str(first_run.landing),
        "--warehouse",
        str(first_run.warehouse),
        env=first_run.env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    new_files = set(exports.glob("*.jsonl")) - before
    assert len(new_files) == 1
    operations = [json.loads(line) for line in new_files.pop().read_text().splitlines()]
    assert [(o["op"], o["key"]) for o in operations] == [("upsert", customer[0])]
    published = first_run.warehouse.with_name("cdp_published.duckdb")
    segment = {
        r[0]: r[1]
        for r in query(published, "select customer_id, email from segments.high_value_customers")
    }
    destination = replay_exports(exports)
    assert {key: fields["email"] for key, fields in destination.items()} == segment


def test_a_customer_card_is_found_by_any_variant_of_an_email(first_run):
    truth = pd.read_csv(first_run.landing / "truth.csv", dtype=str, keep_default_na=False)
    person = truth[(truth.identifier_type == "user_id") & (truth.person_id != "")].iloc[0].person_id
    mine = truth[truth.person_id == person]
    email = mine[mine.identifier_type == "email"].identifier_value.iloc[0]
    result = run_cdp(
        "customer",
        f"  {email.upper()} ",
        "--json",
        "--warehouse",
        str(first_run.warehouse),
        env=first_run.env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    card = json.loads(result.stdout)
    identifiers = {(i["identifier_type"], i["identifier_value"]) for i in card["identifiers"]}
    assert (
        "user_id",
        mine[mine.identifier_type == "user_id"].identifier_value.iloc[0],
    ) in identifiers
    assert ("email", email) in identifiers


def test_dbt_build_works_on_its_own_against_the_same_warehouse(first_run, second_run):
    result = dbt(
        "build", "--quiet",
        warehouse=first_run.warehouse, target=first_run.warehouse.parent / "dbt_target",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    with duckdb.connect(str(first_run.warehouse), read_only=True) as con:
        assert con.execute("select count(*) from cdp.cdp.customers").fetchone()[0] > 0
