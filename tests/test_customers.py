"""cdp.customers (the golden record), cdp.customer_events, the purchase propensity model and
`cdp customer`, on two real pipeline runs (tests/customer_pipeline.py)."""

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from orchestration.lookup import latest_propensity_run, propensity_summary
from tests.conftest import dbt, run_cdp
from tests.customer_pipeline import DOMAIN


def query(database: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def rows(database: Path, sql: str, params: list | None = None) -> list[dict]:
    with duckdb.connect(str(database), read_only=True) as con:
        cursor = con.execute(sql, params or [])
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row)) for row in cursor.fetchall()]


def customer_of(database: Path, identifier_type: str, value: str) -> str:
    found = query(
        database,
        "select customer_id from cdp.customer_identifiers "
        "where identifier_type = ? and identifier_value = ?",
        [identifier_type, value],
    )
    assert len(found) == 1, (identifier_type, value, found)
    return found[0][0]


def profile(database: Path, identifier_type: str, value: str) -> dict:
    customer_id = customer_of(database, identifier_type, value)
    return rows(database, "select * from cdp.customers where customer_id = ?", [customer_id])[0]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def ana(two_runs) -> dict:
    return profile(two_runs.second.published, "user_id", "u-ana-golden")


def test_the_crm_wins_names_and_lifecycle_and_the_latest_identify_wins_email_and_phone(ana):
    # CRM first for names even though the identify traits (Anita Events) are more recent.
    assert (ana["first_name"], ana["last_name"]) == ("Ana", "Crm")
    assert ana["lifecycle_stage"] == "customer"
    # Identify first for email and phone, the most recent identify winning: not the CRM's
    # ana.golden@ nor its (415) 555-0199.
    assert ana["email"] == f"ana.new@{DOMAIN}"
    assert ana["phone"] == "+14155550188"


def test_every_profile_value_is_kept_with_its_source_and_one_survivor_per_field(two_runs):
    customer_id = customer_of(two_runs.second.published, "user_id", "u-ana-golden")
    values = rows(
        two_runs.second.published,
        "select field, source, value, is_survivor from intermediate.int_customer_profile_values "
        "where customer_id = ? order by field, source, value",
        [customer_id],
    )
    first_names = {
        (v["source"], v["value"], v["is_survivor"]) for v in values if v["field"] == "first_name"
    }
    assert first_names == {("crm", "Ana", True), ("identify", "Anita", False)}
    emails = {(v["source"], v["value"], v["is_survivor"]) for v in values if v["field"] == "email"}
    assert emails == {
        ("crm", f"ana.golden@{DOMAIN}", False),
        ("identify", f"ana.golden@{DOMAIN}", False),
        ("identify", f"ana.new@{DOMAIN}", True),
    }


def test_consent_is_the_latest_signal_with_the_time_the_state_changed(ana, two_runs):
    # Email: CRM unsubscribed (as of its last activity 2026-09-05), an identify saying
    # unsubscribed=false on 10-01, a newsletter opt-in on 10-20: opted in since 10-01.
    assert ana["email_consent"] == "opted_in"
    assert ana["email_consent_changed_at"] == utc("2026-10-01T10:00:00Z")
    assert ana["email_consent_source"] == "event"
    assert ana["is_email_contactable"] is True
    # SMS: subscribed 10-02, STOP 10-10.
    assert ana["sms_consent"] == "opted_out"
    assert ana["sms_consent_changed_at"] == utc("2026-10-10T10:00:00Z")
    assert ana["is_sms_contactable"] is False
    # Bo: an event opted in on 10-01, the CRM (last activity 10-15) says unsubscribed.
    bo = profile(two_runs.second.published, "user_id", "u-bo-latest")
    assert bo["email_consent"] == "opted_out"
    assert bo["email_consent_changed_at"] == utc("2026-10-15T12:00:00Z")
    assert bo["email_consent_source"] == "crm"
    assert bo["is_email_contactable"] is False


def test_orders_revenue_products_sessions_and_carts_are_counted_from_the_events(ana):
    # T-ORD-1 was sent twice (same order id): one order.
    assert ana["order_count"] == 2
    assert ana["lifetime_revenue"] == pytest.approx(200.0)
    assert ana["average_order_value"] == pytest.approx(100.0)
    assert ana["first_order_at"] == utc("2026-10-05T10:00:00Z")
    assert ana["last_order_at"] == utc("2026-10-25T10:00:00Z")
    assert ana["products_bought"] == ["Ceramic Mug", "Classic Tee", "Yoga Mat"]
    assert ana["page_view_count"] == 1
    # Nine visits more than 30 minutes apart; the order sent twice 30 s apart is one session,
    # and so is the cart 10 minutes before the second order.
    assert ana["session_count"] == 9
    # The cart of 10-12 had no order in its session; the one of 10-25 did.
    assert ana["last_cart_abandoned_at"] == utc("2026-10-12T10:00:00Z")
    assert ana["last_cart_activity_at"] == utc("2026-10-25T09:50:00Z")


def test_days_since_last_order_counts_to_the_newest_event(two_runs, ana):
    newest = query(two_runs.second.published, "select max(event_at) from cdp.customer_events")
    assert ana["days_since_last_order"] == (newest[0][0] - ana["last_order_at"]).days


def test_rfm_scores_rank_buyers_and_leave_non_buyers_out(two_runs):
    buyers = rows(
        two_runs.second.published,
        "select order_count, lifetime_revenue, last_order_at, rfm_recency_score, "
        "rfm_frequency_score, rfm_monetary_score from cdp.customers",
    )
    scored = [b for b in buyers if b["order_count"] > 0]
    assert all(
        b["rfm_recency_score"] is None and b["rfm_monetary_score"] is None
        for b in buyers
        if b["order_count"] == 0
    )
    assert {b["rfm_monetary_score"] for b in scored} == {1, 2, 3, 4, 5}
    for key, score in [
        ("lifetime_revenue", "rfm_monetary_score"),
        ("order_count", "rfm_frequency_score"),
        ("last_order_at", "rfm_recency_score"),
    ]:
        ordered = sorted(scored, key=lambda b: b[key])
        assert all(a[score] <= b[score] for a, b in zip(ordered, ordered[1:])), key


def test_a_customers_journey_starts_at_the_first_anonymous_visit_in_one_query(two_runs):
    customer_id = customer_of(two_runs.second.published, "user_id", "u-ana-golden")
    journey = query(
        two_runs.second.published,
        "select message_id, user_id, anonymous_id from cdp.customer_events "
        "where customer_id = ? order by event_at, message_id",
        [customer_id],
    )
    assert journey[0] == ("t-ana-01", None, "anon-ana")
    assert [m for m, _, _ in journey] == [f"t-ana-{n:02d}" for n in range(1, 12)]


def test_events_are_re_keyed_to_the_surviving_customer_when_profiles_merge(two_runs):
    first, second = two_runs.first.published, two_runs.second.published
    device = customer_of(first, "anonymous_id", "anon-cy-1")
    account = customer_of(first, "user_id", "u-cy-merge")
    assert device != account
    survivor = customer_of(second, "user_id", "u-cy-merge")
    assert customer_of(second, "anonymous_id", "anon-cy-1") == survivor
    merged = ({device, account} - {survivor}).pop()
    keyed = dict(
        query(
            second,
            "select message_id, customer_id from cdp.customer_events "
            "where message_id like 't-cy-%'",
        )
    )
    assert keyed == {f"t-cy-0{n}": survivor for n in range(1, 5)}
    assert query(
        second, "select count(*) from cdp.customer_events where customer_id = ?", [merged]
    ) == [(0,)]
    assert query(second, "select count(*) from cdp.customers where customer_id = ?", [merged]) == [
        (0,)
    ]


def test_every_event_with_a_customer_has_a_session_of_that_customer(two_runs):
    problems = query(
        two_runs.second.published,
        """
        select count(*) from cdp.customer_events
        where (customer_id is null) <> (session_id is null)
        """,
    )
    assert problems == [(0,)]
    shared = query(
        two_runs.second.published,
        "select session_id from cdp.customer_events where session_id is not null "
        "group by session_id having count(distinct customer_id) > 1",
    )
    assert shared == []


# --- the predictive trait --------------------------------------------------------------


def model_runs(database: Path) -> list[dict]:
    return rows(database, "select * from cdp.predictive_model_runs order by built_at")


def stored_models(database: Path) -> list[dict]:
    return rows(
        database, "select * from intermediate.int_purchase_propensity_models order by trained_at"
    )


def test_the_propensity_model_beats_recency_alone_on_a_time_based_holdout(two_runs):
    runs = model_runs(two_runs.second.published)
    assert len(runs) == 2  # one per build, the first one kept
    for run in runs:
        print(
            f"\npurchase propensity {run['model_version']}: holdout AUC {run['holdout_auc']:.3f} "
            f"vs {run['baseline_auc']:.3f} for recency alone ({run['holdout_rows']} customers, "
            f"{run['holdout_positives']} bought)"
        )
        assert run["status"] == "trained"
        assert run["holdout_auc"] > run["baseline_auc"] + 0.05
        horizon = timedelta(days=run["horizon_days"])
        assert run["holdout_cutoff_at"] == run["reference_at"] - horizon
        # Every training label ends before the holdout starts: no peeking at the holdout.
        cutoffs = [datetime.fromisoformat(c) for c in run["training_cutoffs"].split(", ")]
        assert cutoffs and all(c + horizon <= run["holdout_cutoff_at"] for c in cutoffs)
        assert run["holdout_positives"] >= 30


def test_the_model_is_trained_once_and_scores_the_next_build_while_the_data_is_recent(
    two_runs,
):
    """The second run's data is 2 days newer, under purchase_propensity_retrain_days (7): it
    scores with the model the first run trained, as of its own newer reference time."""
    first, second = model_runs(two_runs.second.published)
    [stored] = stored_models(two_runs.second.published)
    assert first["model_version"] == second["model_version"] == stored["model_version"]
    assert first["trained_at"] == second["trained_at"] == stored["trained_at"]
    assert first["reference_at"] == second["reference_at"] == stored["reference_at"]
    assert first["scored_as_of"] == stored["reference_at"]
    assert timedelta(days=1) < second["scored_as_of"] - first["scored_as_of"] < timedelta(days=7)
    scored_by = query(
        two_runs.second.published,
        "select distinct model_version, model_trained_at, scored_as_of "
        "from intermediate.int_purchase_propensity",
    )
    assert scored_by == [(stored["model_version"], stored["trained_at"], second["scored_as_of"])]


def build_propensity(warehouse: Path, target: Path, variables: str) -> None:
    """dbt build of the propensity models and everything downstream, on ``warehouse``."""
    result = dbt(
        "build", "--select", "int_purchase_propensity_models+", "--vars", variables,
        warehouse=warehouse, target=target,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]


@pytest.fixture(scope="module")
def retrained(two_runs, tmp_path_factory) -> Path:
    """A copy of the second run's warehouse after a build of the propensity models that
    retrains once the data is a day past the model's (the second run's data is 2 days newer)."""
    root = tmp_path_factory.mktemp("retrained")
    warehouse = root / "retrained.duckdb"
    shutil.copyfile(two_runs.second.published, warehouse)
    build_propensity(warehouse, root / "target", "{purchase_propensity_retrain_days: 1}")
    return warehouse


def test_a_model_due_for_retraining_is_trained_on_the_new_data_and_scores(two_runs, retrained):
    before = stored_models(two_runs.second.published)
    after = stored_models(retrained)
    assert after[: len(before)] == before  # the store is appended to, never rewritten
    [new] = after[len(before) :]
    latest_run = model_runs(retrained)[-1]
    assert new["status"] == "trained" and new["holdout_auc"] > new["baseline_auc"] + 0.05
    assert new["reference_at"] == latest_run["scored_as_of"] > before[-1]["reference_at"]
    assert new["model_version"] != before[-1]["model_version"]  # new data, new model
    assert (latest_run["model_version"], latest_run["trained_at"]) == (
        new["model_version"],
        new["trained_at"],
    )
    assert query(
        retrained, "select distinct model_version from intermediate.int_purchase_propensity"
    ) == [(new["model_version"],)]


def test_a_model_without_enough_data_scores_nobody_and_the_next_build_trains(two_runs, tmp_path):
    """As of 2026-08-20 the training cutoffs (T-2H and before) precede every event: the build
    stores why it did not train, scores nobody, and says so; the next build, as of the newest
    event, trains although the model of the first run is recent, and scores everyone."""
    warehouse = tmp_path / "early.duckdb"
    shutil.copyfile(two_runs.second.published, warehouse)
    before = stored_models(warehouse)
    build_propensity(warehouse, tmp_path / "t1", '{segments_as_of: "2026-08-20T00:00:00Z"}')
    [untrained] = stored_models(warehouse)[len(before) :]
    assert untrained["status"].startswith("not enough data")
    assert untrained["training_rows"] == 0 and untrained["parameters"] is None
    assert query(warehouse, "select count(*), count(purchase_propensity) from cdp.customers") == [
        (query(warehouse, "select count(*) from cdp.customers")[0][0], 0)
    ]
    with duckdb.connect(str(warehouse), read_only=True) as con:
        run = latest_propensity_run(con)
    assert run["model_version"] is None
    assert propensity_summary(run) == f"not trained: {untrained['status']}"

    build_propensity(warehouse, tmp_path / "t2", "{}")
    [trained] = stored_models(warehouse)[len(before) + 1 :]
    assert trained["status"] == "trained"
    assert trained["reference_at"] == model_runs(two_runs.second.published)[-1]["scored_as_of"]
    scored, customers_with_events = query(
        warehouse,
        "select count(purchase_propensity), (select count(distinct customer_id) "
        "from cdp.customer_events) from cdp.customers",
    )[0]
    assert scored == customers_with_events > 0


def test_every_customer_with_events_gets_a_propensity_between_0_and_1(two_runs):
    counts = query(
        two_runs.second.published,
        """
        select
            count(*) filter (where purchase_propensity is not null),
            count(*) filter (where purchase_propensity < 0 or purchase_propensity > 1),
            (select count(distinct customer_id) from cdp.customer_events)
        from cdp.customers
        """,
    )
    scored, out_of_range, with_events = counts[0]
    assert scored == with_events and out_of_range == 0
    scored_in_run = model_runs(two_runs.second.published)[-1]["scored_customers"]
    assert scored_in_run == scored


def test_the_dagster_run_shows_the_model_version_and_both_aucs(two_runs):
    home = Path(two_runs.env["DAGSTER_HOME"])
    latest = model_runs(two_runs.second.published)[-1]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(
            dg.AssetKey(["predictive", "purchase_propensity"])
        )
    metadata = event.asset_materialization.metadata
    assert metadata["model_version"].value == latest["model_version"]
    assert metadata["holdout_auc"].value == pytest.approx(latest["holdout_auc"], abs=1e-4)
    assert metadata["baseline_auc"].value == pytest.approx(latest["baseline_auc"], abs=1e-4)
    assert f"holdout AUC {latest['holdout_auc']:.3f} vs {latest['baseline_auc']:.3f}" in (
        two_runs.second.output
    )


# --- cdp customer ----------------------------------------------------------------------


def test_the_customer_card_shows_profile_consent_identifiers_segments_and_events(two_runs):
    result = run_cdp(
        "customer",
        f"email:ANA.NEW@{DOMAIN.upper()}",
        "--json",
        "--warehouse",
        str(two_runs.warehouse),
        env=two_runs.env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    card = json.loads(result.stdout)
    assert card["profile"]["first_name"] == "Ana"
    assert card["profile"]["products_bought"] == ["Ceramic Mug", "Classic Tee", "Yoga Mat"]
    assert card["consent"]["email"]["consent"] == "opted_in"
    assert card["consent"]["sms"]["consent"] == "opted_out"
    assert card["consent"]["sms"]["contactable"] is False
    identifiers = {(i["identifier_type"], i["identifier_value"]) for i in card["identifiers"]}
    assert {("user_id", "u-ana-golden"), ("crm_contact_id", "990000001")} <= identifiers
    names = [e["name"] for e in card["recent_events"]]
    assert names[0] is None and card["recent_events"][0]["message_type"] == "identify"
    assert names[1:3] == ["Order Completed", "Product Added"]
    expected_segments = {
        r[0]
        for r in query(
            two_runs.second.published,
            "select segment_name from cdp.segment_memberships where customer_id = ?",
            [card["profile"]["customer_id"]],
        )
    }
    assert {s["segment_name"] for s in card["segments"]} == expected_segments


def test_the_customer_card_as_text_says_what_each_consent_is_and_since_when(two_runs):
    result = run_cdp(
        "customer",
        "u-ana-golden",
        "--warehouse",
        str(two_runs.warehouse),
        env=two_runs.env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("Ana Crm")
    consent = lines[lines.index("Consent") + 1 : lines.index("Consent") + 3]
    assert (
        consent[0].split()
        == "email opted_in since 2026-10-01 10:00 (event); may be contacted".split()
    )
    assert (
        consent[1].split()
        == "sms opted_out since 2026-10-10 10:00 (event); may not be contacted".split()
    )
    assert any(line.split()[:2] == ["products_bought", "Ceramic"] for line in lines)
