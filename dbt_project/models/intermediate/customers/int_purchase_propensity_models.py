"""The purchase propensity model store: one row per training of the model, never rebuilt.

The model gives the chance that a customer orders within the horizon. It is trained on the
customers' own history and evaluated on a time-based holdout:

    T  the reference time (var segments_as_of, else the newest event)
    H  the horizon (var purchase_propensity_horizon_days, default 30)

    training   features as of T-2H, T-2H-15d and T-2H-30d; label: ordered within H after
    holdout    features as of T-H; label: ordered in (T-H, T]. No training label reaches past T-H.
    baseline   recency alone (days since the customer's last event), on the same holdout

The model (log1p features, standardized, logistic regression) is then refit on the training
and holdout examples; its parameters are stored (column parameters, JSON) with the
evaluation. A customer is in an example set when it has an event at or before the cutoff.

Training is scheduled by the data: a build trains again when the store has no model of this
revision, features and horizon, or when T is var purchase_propensity_retrain_days (default
7) or more past the T of the latest one (or before it). Otherwise it appends nothing, and
intermediate.int_purchase_propensity scores every customer with the latest model. Like the
id registry, a full refresh keeps the store (full_refresh=False): a rebuild scores with the
same model. This file is also the one home of the features: int_purchase_propensity imports
it by path.
"""

import hashlib
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

# scikit-learn is imported by the functions that train, only when a build trains: importing it
# took 0.65 s of every build's dbt process, and most builds score with the stored model.

MODEL_NAME = "purchase_propensity"
MODEL_REVISION = 2  # bump when features or the algorithm change
BASELINE = "recency: days since the last event"
ALGORITHM = "logistic regression on log1p, standardized features"
TRAINING_OFFSETS_DAYS = (0, 15, 30)  # training cutoffs: T-2H minus these
MIN_CLASS_EXAMPLES = 10  # fewer positives or negatives than this: not enough data to train
NEVER_DAYS = 365.0  # days since an order for customers who never ordered

# The store's columns: the model, its evaluation and its parameters (JSON).
STORE_COLUMNS = {
    "model_name": "varchar",
    "model_version": "varchar",
    "status": "varchar",
    "trained_at": "timestamptz",
    "reference_at": "timestamptz",
    "horizon_days": "bigint",
    "training_cutoffs": "varchar",
    "holdout_cutoff_at": "timestamptz",
    "training_rows": "bigint",
    "training_positives": "bigint",
    "holdout_rows": "bigint",
    "holdout_positives": "bigint",
    "holdout_auc": "double",
    "baseline": "varchar",
    "baseline_auc": "double",
    "algorithm": "varchar",
    "features": "varchar",
    "parameters": "varchar",
}

FEATURES = [
    "days_since_last_event",
    "days_since_first_event",
    "event_count",
    "event_count_7d",
    "event_count_30d",
    "product_view_count_7d",
    "product_view_count_14d",
    "product_view_count_30d",
    "page_view_count_30d",
    "active_day_count_30d",
    "cart_event_count_14d",
    "search_count_30d",
    "order_count",
    "days_since_last_order",
]

# Features of every customer with an event at or before each cutoff, from events up to it.
# Every cutoff is a whole number of days n before the newest, and no window is longer than
# WINDOW_DAYS. The events of the windows (up to WINDOW_DAYS before the oldest cutoff) are
# rolled up, in one pass, per customer, day before the newest cutoff (day d holds the events
# in (newest - (d+1) days, newest - d days]) and calendar day, so "at or before the cutoff" is
# day >= n and "within w days of it" is day < n + w, and the per-cutoff aggregates (side by
# side) read the rollup instead of every event. The older events are at or before every
# cutoff and in no window: they make one more row per customer, on a day past every window
# and with no calendar day, which only the lifetime features (first and last event, event
# count, last order) read. Scoring has one cutoff, so it rolls up the last 30 days only: at a
# million customers its features took 2.3-2.4 s against 3.4-3.6 s rolling up every event.
# The counts sum a CASE: at a million customers that took 2.5 s against 3.7 s as FILTER
# clauses. Distinct calendar days (UTC, whatever the session's time zone: days since the
# epoch, which also made the examples query 10.7-11.2 s against 11.7-12.9 s as date_trunc)
# come from the same rollup, distinct orders from a per-order one. {k}: the cutoff's index;
# {n}: its days before the newest.
WINDOW_DAYS = 30
PER_CUTOFF_AGGREGATES = """
    max(last_at) filter (where day >= {n}) as last_event_at_{k},
    min(first_at) filter (where day >= {n}) as first_event_at_{k},
    sum(case when day >= {n} then events else 0 end)::bigint as event_count_{k},
    sum(case when day >= {n} and day < {n} + 7 then events else 0 end)::bigint
        as event_count_7d_{k},
    sum(case when day >= {n} and day < {n} + 30 then events else 0 end)::bigint
        as event_count_30d_{k},
    sum(case when day >= {n} and day < {n} + 7 then product_views else 0 end)::bigint
        as product_view_count_7d_{k},
    sum(case when day >= {n} and day < {n} + 14 then product_views else 0 end)::bigint
        as product_view_count_14d_{k},
    sum(case when day >= {n} and day < {n} + 30 then product_views else 0 end)::bigint
        as product_view_count_30d_{k},
    sum(case when day >= {n} and day < {n} + 30 then page_views else 0 end)::bigint
        as page_view_count_30d_{k},
    sum(case when day >= {n} and day < {n} + 14 then cart_events else 0 end)::bigint
        as cart_event_count_14d_{k},
    sum(case when day >= {n} and day < {n} + 30 then searches else 0 end)::bigint
        as search_count_30d_{k},
    max(last_order_at) filter (where day >= {n}) as last_order_at_{k},
"""
# A day counts as active for a cutoff when it has an event in (cutoff - 30 days, cutoff]: its
# first event is at or before the cutoff and its last one after the window's start (a day
# is shorter than the window, so it cannot hold both ends). Windows are whole hours (a day
# interval on a timestamptz follows the session's time zone across daylight saving).
PER_CUTOFF_ACTIVE_DAYS = """
    count(*) filter (where first_at <= {c} and last_at > {c} - interval 720 hour) as active_day_count_30d_{k},
"""
PER_CUTOFF_ORDERS = """
    count(*) filter (where first_at <= {c}) as order_count_{k},
"""
PER_CUTOFF_EXAMPLES = """
select
    {c} as cutoff_at,
    a.customer_id,
    date_diff('second', a.last_event_at_{k}, {c}) / 86400.0 as days_since_last_event,
    date_diff('second', a.first_event_at_{k}, {c}) / 86400.0 as days_since_first_event,
    a.event_count_{k} as event_count,
    a.event_count_7d_{k} as event_count_7d,
    a.event_count_30d_{k} as event_count_30d,
    a.product_view_count_7d_{k} as product_view_count_7d,
    a.product_view_count_14d_{k} as product_view_count_14d,
    a.product_view_count_30d_{k} as product_view_count_30d,
    a.page_view_count_30d_{k} as page_view_count_30d,
    coalesce(d.active_day_count_30d_{k}, 0) as active_day_count_30d,
    a.cart_event_count_14d_{k} as cart_event_count_14d,
    a.search_count_30d_{k} as search_count_30d,
    coalesce(o.order_count_{k}, 0) as order_count,
    coalesce(date_diff('second', a.last_order_at_{k}, {c}) / 86400.0, {never}) as days_since_last_order,
from aggregates as a
left join active_days as d on a.customer_id = d.customer_id
left join order_counts as o on a.customer_id = o.customer_id
where a.event_count_{k} > 0
"""


def features_sql(cutoffs) -> str:
    """The features query over a relation named events, one row per cutoff and customer."""
    newest = max(cutoffs)
    days_before = [(newest - c) / timedelta(days=1) for c in cutoffs]
    if any(days != int(days) for days in days_before):
        raise ValueError(f"every cutoff must be whole days before {newest}: {cutoffs}")
    literals = [f"timestamptz '{c.isoformat()}'" for c in cutoffs]

    def each(template: str, joiner: str = "") -> str:
        return joiner.join(
            template.format(k=k, c=c, n=int(days_before[k]), never=NEVER_DAYS)
            for k, c in enumerate(literals)
        )

    newest_literal = f"timestamptz '{newest.isoformat()}'"
    rollup_days = int(max(days_before)) + WINDOW_DAYS  # days 0 to rollup_days - 1
    rollup_start = f"{newest_literal} - interval {24 * rollup_days} hour"
    return f"""
with pieces as (
    select
        customer_id,
        (epoch_us({newest_literal}) - epoch_us(event_at)) // 86400000000 as day,
        epoch_us(event_at) // 86400000000 as date,
        count(*) as events,
        count(*) filter (where event_name = 'Product Viewed') as product_views,
        count(*) filter (where message_type in ('page', 'screen')) as page_views,
        count(*) filter (where event_name in ('Product Added', 'Checkout Started'))
            as cart_events,
        count(*) filter (where event_name = 'Products Searched') as searches,
        min(event_at) as first_at,
        max(event_at) as last_at,
        max(event_at) filter (where event_name = 'Order Completed') as last_order_at,
    from events
    where customer_id is not null and event_at <= {newest_literal} and event_at > {rollup_start}
    group by customer_id, day, date
    union all
    select
        customer_id,
        {rollup_days} as day,
        null as date,
        count(*) as events,
        0 as product_views,
        0 as page_views,
        0 as cart_events,
        0 as searches,
        min(event_at) as first_at,
        max(event_at) as last_at,
        max(event_at) filter (where event_name = 'Order Completed') as last_order_at,
    from events
    where customer_id is not null and event_at <= {rollup_start}
    group by customer_id
),
aggregates as materialized (
    select customer_id, {each(PER_CUTOFF_AGGREGATES)}
    from pieces
    group by customer_id
),
days as (
    select customer_id, min(first_at) as first_at, max(last_at) as last_at
    from pieces
    where date is not null
    group by customer_id, date
),
active_days as materialized (
    select customer_id, {each(PER_CUTOFF_ACTIVE_DAYS)}
    from days
    group by customer_id
),
-- The same events as pieces, filtered again: a CTE shared by both (not materialized) made
-- the model 2.5-3 s slower at a million customers.
orders as (
    select customer_id, min(event_at) as first_at
    from events
    where customer_id is not null and event_at <= {newest_literal}
        and event_name = 'Order Completed' and order_id is not null
    group by customer_id, order_id
),
order_counts as materialized (
    select customer_id, {each(PER_CUTOFF_ORDERS)}
    from orders
    group by customer_id
)
{each(PER_CUTOFF_EXAMPLES, "union all")}
"""


# Customers who completed an order in (cutoff, cutoff + horizon].
LABELS_SQL = """
select distinct c.cutoff_at, e.customer_id
from events as e
inner join cutoffs as c
    on e.event_at > c.cutoff_at and e.event_at <= c.cutoff_at + to_hours(24 * {horizon})
where e.customer_id is not null and e.event_name = 'Order Completed'
"""


def model(dbt, session):
    dbt.config(
        materialized="incremental",
        incremental_strategy="append",
        full_refresh=False,
        on_schema_change="append_new_columns",
    )
    horizon_days = int(dbt.config.meta_get("horizon_days"))
    retrain_days = retrain_after_days(dbt.config.meta_get("retrain_days"))
    events = dbt.ref("customer_events")
    reference = reference_time(events, dbt.config.meta_get("as_of"))
    latest = latest_model(session, f"select * from {dbt.this}") if dbt.is_incremental else None
    if reference is None or _reusable(latest, reference, horizon_days, retrain_days):
        return store_rows(session, [])
    return store_rows(session, [train(events, reference, horizon_days, datetime.now(UTC))])


def retrain_after_days(value) -> float:
    """vars.purchase_propensity_retrain_days as a number of days, or a clear error."""
    try:
        days = float(value)
    except (TypeError, ValueError):
        days = -1.0
    if not days >= 0:  # also refuses NaN
        raise ValueError(
            f"vars.purchase_propensity_retrain_days in dbt_project.yml (or --vars) must be a "
            f"number of days, 0 or more (0 trains on every build): got {value!r}"
        )
    return days


def store_rows(session, rows: list[dict]):
    """rows as a relation with the store's columns and types (also when there is none)."""
    frame = pd.DataFrame(rows, columns=list(STORE_COLUMNS))
    return session.from_df(frame).project(
        ", ".join(f"{name}::{kind} as {name}" for name, kind in STORE_COLUMNS.items())
    )


def latest_model(session, store: str) -> dict | None:
    """The latest row of the store (a query of it), or None when it has none."""
    relation = session.sql(f"select * from ({store}) order by trained_at desc limit 1")
    rows = relation.fetchall()
    return dict(zip(relation.columns, rows[0], strict=True)) if rows else None


def _reusable(latest: dict | None, reference, horizon_days: int, retrain_days: float) -> bool:
    """Whether the latest model scores as of reference: trained by this revision on the same
    features and horizon, on data up to at most retrain_days before reference."""
    if latest is None or latest["status"] != "trained":
        return False
    if not latest["model_version"].startswith(f"{MODEL_NAME}-v{MODEL_REVISION}-"):
        return False
    if latest["features"] != ", ".join(FEATURES) or latest["horizon_days"] != horizon_days:
        return False
    age = reference - pd.Timestamp(latest["reference_at"]).tz_convert("UTC")
    return timedelta(0) <= age < timedelta(days=retrain_days)


def train(events, reference, horizon_days: int, trained_at) -> dict:
    """One row of the store: the model trained as of reference, with its evaluation and
    parameters (or the reason it was not trained)."""
    horizon = timedelta(days=horizon_days)
    holdout_cutoff = reference - horizon
    training_cutoffs = [holdout_cutoff - horizon - timedelta(days=d) for d in TRAINING_OFFSETS_DAYS]
    examples = _examples(events, training_cutoffs + [holdout_cutoff], horizon_days)
    training = examples[examples.cutoff_at.isin(training_cutoffs)]
    holdout = examples[examples.cutoff_at == holdout_cutoff]
    row = {
        "model_name": MODEL_NAME,
        "model_version": None,
        "status": "trained",
        "trained_at": pd.Timestamp(trained_at),
        "reference_at": reference,
        "horizon_days": horizon_days,
        "training_cutoffs": ", ".join(c.isoformat() for c in training_cutoffs),
        "holdout_cutoff_at": holdout_cutoff,
        "training_rows": len(training),
        "training_positives": int(training.label.sum()),
        "holdout_rows": len(holdout),
        "holdout_positives": int(holdout.label.sum()),
        "holdout_auc": None,
        "baseline": BASELINE,
        "baseline_auc": None,
        "algorithm": ALGORITHM,
        "features": ", ".join(FEATURES),
        "parameters": None,
    }
    if not (_enough(training) and _enough(holdout)):
        row["status"] = "not enough data: too few customers who did or did not order"
        return row

    from sklearn.metrics import roc_auc_score

    evaluated = _classifier().fit(training[FEATURES].to_numpy(), training.label.to_numpy())
    row["holdout_auc"] = float(
        roc_auc_score(holdout.label, evaluated.predict_proba(holdout[FEATURES].to_numpy())[:, 1])
    )
    row["baseline_auc"] = float(roc_auc_score(holdout.label, -holdout["days_since_last_event"]))
    refit_on = pd.concat([training, holdout])
    final = _classifier().fit(refit_on[FEATURES].to_numpy(), refit_on.label.to_numpy())
    row["parameters"] = parameters(final)
    row["model_version"] = _version(refit_on)
    return row


def parameters(fitted) -> str:
    """A fitted _classifier() as JSON: what score_sql needs to score with it."""
    scaler, regression = fitted[1], fitted[2]
    return json.dumps(
        {
            "mean": scaler.mean_.tolist(),
            "scale": scaler.scale_.tolist(),
            "coefficients": regression.coef_[0].tolist(),
            "intercept": float(regression.intercept_[0]),
        }
    )


def score_sql(parameters: str) -> str:
    """The model's probability as a SQL expression over the FEATURES columns, from its stored
    parameters: the sigmoid of the intercept plus each coefficient times the standardized
    ln(1 + feature), as the trained pipeline computes it."""
    p = json.loads(parameters)
    terms = " + ".join(
        f"({coefficient!r}) * ((ln(1 + {feature}) - ({mean!r})) / ({scale!r}))"
        for feature, mean, scale, coefficient in zip(
            FEATURES, p["mean"], p["scale"], p["coefficients"], strict=True
        )
    )
    return f"1.0 / (1.0 + exp(-(({p['intercept']!r}) + {terms})))"


def reference_time(events, as_of):
    """var segments_as_of (read as UTC when it has no offset), else the newest event."""
    if as_of:
        stamp = pd.Timestamp(as_of)
        return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    newest = events.aggregate("max(event_at)").fetchall()[0][0]
    return None if newest is None else pd.Timestamp(newest).tz_convert("UTC")


def _examples(events, cutoffs, horizon_days: int) -> pd.DataFrame:
    """Features and label (ordered within the horizon after the cutoff) per cutoff and customer,
    in order of cutoff and customer."""
    cutoff_list = ", ".join(f"(timestamptz '{c.isoformat()}')" for c in cutoffs)
    examples = events.query(
        "events",
        f"""
        with cutoffs as (select * from (values {cutoff_list}) as t(cutoff_at))
        select f.*, (l.customer_id is not null)::bigint as label
        from ({features_sql(cutoffs)}) as f
        left join ({LABELS_SQL.format(horizon=horizon_days)}) as l
            on f.cutoff_at = l.cutoff_at and f.customer_id = l.customer_id
        order by f.cutoff_at, f.customer_id
        """,
    ).df()
    examples["cutoff_at"] = pd.to_datetime(examples["cutoff_at"], utc=True)
    examples[FEATURES] = examples[FEATURES].astype(float)
    return examples


def _enough(examples: pd.DataFrame) -> bool:
    positives = int(examples.label.sum())
    return min(positives, len(examples) - positives) >= MIN_CLASS_EXAMPLES


def _classifier():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    return make_pipeline(
        FunctionTransformer(np.log1p),
        StandardScaler(),
        # Newton steps suit many rows and few features: at a million customers both fits took
        # 3.9 s, against 5.7 s with lbfgs (which also stopped short of the optimum).
        LogisticRegression(C=1.0, solver="newton-cholesky", max_iter=100),
    )


def _version(examples: pd.DataFrame) -> str:
    """The revision, algorithm and the exact training data, hashed: same data, same version."""
    import sklearn

    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            {"revision": MODEL_REVISION, "features": FEATURES, "sklearn": sklearn.__version__}
        ).encode()
    )
    digest.update(pd.util.hash_pandas_object(examples[["customer_id", "label", *FEATURES]]).values)
    return f"{MODEL_NAME}-v{MODEL_REVISION}-{digest.hexdigest()[:10]}"
