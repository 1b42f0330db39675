-- One row per build of the purchase propensity scores (intermediate.int_purchase_propensity):
-- the model that scored them (a row of intermediate.int_purchase_propensity_models: version,
-- status, when and on what data it was trained, its time-based holdout and the holdout AUC of
-- the model and of the recency baseline), the time scored as of and the customers scored.
-- Append-only (incremental with full_refresh: false).
-- The post-hook fills built_at in a warehouse built before it existed: each of its builds
-- trained its model then.
{{ config(
    post_hook=["update {{ this }} set built_at = trained_at where built_at is null"],
) }}

with scores as (
    select
        any_value(model_trained_at) as model_trained_at,
        any_value(scored_as_of) as scored_as_of,
        count(purchase_propensity) as scored_customers,
    from {{ ref('int_purchase_propensity') }}
),

models as (
    select * from {{ ref('int_purchase_propensity_models') }}
),

final as (
    select
        m.model_name,
        m.model_version,
        m.status,
        {{ build_started_at() }} as built_at,
        m.trained_at,
        s.scored_as_of,
        m.reference_at,
        m.horizon_days,
        m.training_cutoffs,
        m.holdout_cutoff_at,
        m.training_rows,
        m.training_positives,
        m.holdout_rows,
        m.holdout_positives,
        m.holdout_auc,
        m.baseline,
        m.baseline_auc,
        m.algorithm,
        m.features,
        s.scored_customers,
    from scores as s
    inner join models as m on m.trained_at = s.model_trained_at
)

select * from final
