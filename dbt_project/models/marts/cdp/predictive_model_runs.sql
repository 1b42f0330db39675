-- One row per build of the purchase propensity model (intermediate.int_purchase_propensity):
-- its version, status, time-based holdout and the holdout AUC of the model and of the recency
-- baseline. Append-only (incremental with full_refresh: false).
with scores as (
    select * from {{ ref('int_purchase_propensity') }}
),

final as (
    select
        model_name,
        model_version,
        status,
        {{ build_started_at() }} as trained_at,
        reference_at,
        horizon_days,
        training_cutoffs,
        holdout_cutoff_at,
        training_rows,
        training_positives,
        holdout_rows,
        holdout_positives,
        holdout_auc,
        baseline,
        baseline_auc,
        algorithm,
        features,
        count(purchase_propensity) as scored_customers,
    from scores
    group by all
)

select * from final
