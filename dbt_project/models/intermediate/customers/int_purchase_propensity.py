"""Purchase propensity per customer: the chance of an order within the horizon, as of the
reference time T (var segments_as_of, else the newest event).

Every customer with an event at or before T is scored with the latest model of
intermediate.int_purchase_propensity_models (the store, which trains when its model is due),
on the features as of T, in DuckDB: no customer row passes through pandas. A customer with no
event by T, or a build whose latest model could not be trained, gets NULL. Each row names
the store's row it was scored with (model_trained_at; model_version, NULL when that row is a
model that could not be trained): cdp.predictive_model_runs reads the model from it.
"""

import importlib.util

# The store's file holds the features and the model; dbt runs in the project folder.
STORE = "models/intermediate/customers/int_purchase_propensity_models.py"


def model(dbt, session):
    dbt.config(materialized="table")
    store = _store_module()
    events = dbt.ref("customer_events")
    models = dbt.ref("int_purchase_propensity_models")
    reference = store.reference_time(events, dbt.config.meta_get("as_of"))
    latest = store.latest_model(session, models.sql_query())
    at = "null::timestamptz" if reference is None else f"timestamptz '{reference.isoformat()}'"
    version, trained_at = "null::varchar", "null::timestamptz"
    if latest is not None:  # a model not trained (too little data) has no version
        if latest["model_version"] is not None:
            version = f"'{latest['model_version']}'"
        trained_at = f"timestamptz '{latest['trained_at'].isoformat()}'"
    features, score = "", "null::double"
    if reference is not None and latest is not None and latest["parameters"] is not None:
        features = f"left join ({store.features_sql([reference])}) as f using (customer_id)"
        score = store.score_sql(latest["parameters"])
    return events.query(
        "events",
        f"""
        with customers as (
            select distinct customer_id from events where customer_id is not null
        )
        select
            customer_id,
            {score} as purchase_propensity,
            {version} as model_version,
            {trained_at} as model_trained_at,
            {at} as scored_as_of,
        from customers
        {features}
        """,
    )


def _store_module():
    spec = importlib.util.spec_from_file_location("int_purchase_propensity_models", STORE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
