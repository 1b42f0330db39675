"""The purchase propensity features (dbt model int_purchase_propensity_models.py) against
their definition, computed here event by event, on events placed at and around every window
edge; and the scores computed in SQL from a model's stored parameters against the fitted model.

The model rolls the events of the windows up per customer and day before the newest cutoff,
and reads the lifetime features from every event; the windows must still be exact: an event
at the cutoff counts, one at the cutoff minus 7 days does not count for the 7-day window, one
a second later does.
"""

import importlib.util
import random
from datetime import timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest

MODEL = (
    Path(__file__).resolve().parents[1]
    / "dbt_project/models/intermediate/customers/int_purchase_propensity_models.py"
)
NAMES = ["Product Viewed", "Order Completed", "Product Added", "Checkout Started",
         "Products Searched", "Page", None]  # fmt: skip


@pytest.fixture(scope="module")
def model():
    spec = importlib.util.spec_from_file_location("int_purchase_propensity_models", MODEL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cutoffs_for(model, reference: pd.Timestamp) -> list[pd.Timestamp]:
    """The model's cutoffs for a 30-day horizon: training, holdout and the reference."""
    horizon = timedelta(days=30)
    holdout = reference - horizon
    training = [holdout - horizon - timedelta(days=d) for d in model.TRAINING_OFFSETS_DAYS]
    return [*training, holdout, reference]


def edge_events(cutoffs: list[pd.Timestamp], customers: int = 200) -> pd.DataFrame:
    """Events at a cutoff minus 0/1/7/14/30 days, exactly or a second either side, plus
    events after the newest cutoff (which no feature may count)."""
    rng = random.Random(7)
    rows = []
    for customer in range(customers):
        for _ in range(rng.randint(1, 25)):
            days = rng.choice([0, 1, 7, 14, 30, 0.5, -3])
            at = (
                rng.choice(cutoffs)
                - timedelta(days=days)
                + timedelta(seconds=rng.choice([-1, 0, 1]))
            )
            name = rng.choice(NAMES)
            rows.append(
                {
                    "customer_id": f"c{customer:03d}",
                    "event_at": at,
                    "event_name": name,
                    "message_type": "page" if name == "Page" else rng.choice(["track", "screen"]),
                    "order_id": f"o{rng.randint(1, 4)}" if name == "Order Completed" else None,
                }
            )
    return pd.DataFrame(rows)


def expected_features(events: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """The features of every customer with an event at or before `cutoff`, by definition."""
    rows = []
    for customer, mine in events.groupby("customer_id"):
        seen = mine[mine.event_at <= cutoff]
        if seen.empty:
            continue

        def within(days: int, frame: pd.DataFrame = seen) -> pd.DataFrame:
            return frame[frame.event_at > cutoff - timedelta(days=days)]

        views = seen[seen.event_name == "Product Viewed"]
        orders = seen[seen.event_name == "Order Completed"]
        rows.append(
            {
                "customer_id": customer,
                "days_since_last_event": (cutoff - seen.event_at.max()).total_seconds() / 86400,
                "days_since_first_event": (cutoff - seen.event_at.min()).total_seconds() / 86400,
                "event_count": len(seen),
                "event_count_7d": len(within(7)),
                "event_count_30d": len(within(30)),
                "product_view_count_7d": len(within(7, views)),
                "product_view_count_14d": len(within(14, views)),
                "product_view_count_30d": len(within(30, views)),
                "page_view_count_30d": len(
                    within(30)[within(30).message_type.isin(["page", "screen"])]
                ),
                "active_day_count_30d": within(30).event_at.dt.floor("D").nunique(),
                "cart_event_count_14d": len(
                    within(14)[within(14).event_name.isin(["Product Added", "Checkout Started"])]
                ),
                "search_count_30d": len(within(30)[within(30).event_name == "Products Searched"]),
                "order_count": orders.order_id.dropna().nunique(),
                "days_since_last_order": (
                    (cutoff - orders.event_at.max()).total_seconds() / 86400
                    if len(orders)
                    else 365.0
                ),
            }
        )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("reference", ["2026-11-15 13:45:10", "2026-11-15 00:00:00"])
@pytest.mark.parametrize("time_zone", ["UTC", "America/Los_Angeles"])
def test_features_match_their_definition_at_every_window_edge(model, reference, time_zone):
    """Whatever the session's time zone: active days are UTC days, windows are exact. Asked
    for every cutoff at once (training) and for the reference alone (scoring: its rollup
    reads only the last 30 days, so the events of the other cutoffs lie before it)."""
    cutoffs = cutoffs_for(model, pd.Timestamp(reference, tz="UTC"))
    events = edge_events(cutoffs)
    con = duckdb.connect()
    con.execute(f"set TimeZone = '{time_zone}'")
    con.register("frame", events)
    con.execute(
        "create table events as select customer_id, event_at::timestamptz as event_at, "
        "event_name, message_type, order_id from frame"
    )
    for asked in (cutoffs, cutoffs[-1:]):
        got = con.table("events").query("events", model.features_sql(asked)).df()
        got["cutoff_at"] = pd.to_datetime(got["cutoff_at"], utc=True)
        assert sorted(got.cutoff_at.unique()) == sorted(asked)
        for cutoff in asked:
            expected = expected_features(events, cutoff)
            mine = got[got.cutoff_at == cutoff].drop(columns="cutoff_at")
            mine = mine.sort_values("customer_id", ignore_index=True)
            assert len(expected) > 100
            pd.testing.assert_frame_equal(
                mine[expected.columns].astype({c: float for c in model.FEATURES}),
                expected.astype({c: float for c in model.FEATURES}),
            )


def test_cutoffs_that_are_not_whole_days_apart_are_refused(model):
    reference = pd.Timestamp("2026-11-15 13:45:10", tz="UTC")
    with pytest.raises(ValueError, match="whole days"):
        model.features_sql([reference - timedelta(hours=5), reference])


def test_scores_in_sql_from_the_stored_parameters_equal_the_fitted_models(model):
    """int_purchase_propensity scores in DuckDB with score_sql(parameters(fitted)): the same
    probabilities as the scikit-learn pipeline, on features far apart in scale."""
    reference = pd.Timestamp("2026-11-15 13:45:10", tz="UTC")
    cutoffs = cutoffs_for(model, reference)
    events = edge_events(cutoffs)
    examples = pd.concat(expected_features(events, cutoff) for cutoff in cutoffs)
    features = examples[model.FEATURES].astype(float).to_numpy()
    rng = random.Random(3)
    # Labels that depend on the features, so that the coefficients are not all near zero.
    labels = [int(row[4] > 2 or rng.random() < 0.2) for row in features]
    fitted = model._classifier().fit(features, labels)
    con = duckdb.connect()
    con.register("examples", examples)
    got = con.execute(
        f"select {model.score_sql(model.parameters(fitted))} from examples"
    ).fetchnumpy()
    scores = next(iter(got.values()))
    expected = fitted.predict_proba(features)[:, 1]
    assert expected.max() - expected.min() > 0.5  # scores far apart, not one value
    assert abs(scores - expected).max() < 1e-12


@pytest.mark.parametrize("value", ["7d", "-1", None, "nan"])
def test_a_retrain_interval_that_is_not_a_number_of_days_is_refused(model, value):
    with pytest.raises(ValueError, match="purchase_propensity_retrain_days .* got"):
        model.retrain_after_days(value)


def test_a_retrain_interval_of_days_is_read_as_a_number(model):
    assert model.retrain_after_days("7") == 7.0
    assert model.retrain_after_days("0.5") == 0.5
    assert model.retrain_after_days(0) == 0.0
