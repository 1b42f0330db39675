-- Every change of customer id, from the persistent registry (identity_registry), never
-- overwritten: a merge (merged_customer_id now lives on as surviving_customer_id, the id
-- created earlier) or a split (part of surviving_customer_id now has merged_customer_id;
-- the part holding the earliest-seen identifier kept the id). The linking identifier is the
-- one through which the merged customer reached the survivor, or for a split the identifier
-- whose link was cut; reason says it in words, with the record that made the link.
with registry as (
    select * from {{ ref('identity_registry') }} where change in ('merge', 'split')
),

final as (
    select
        change,
        case when change = 'merge' then previous_customer_id else customer_id end as merged_customer_id,
        case when change = 'merge' then customer_id else previous_customer_id end as surviving_customer_id,
        changed_at,
        min(linking_identifier_type) as linking_identifier_type,
        min(linking_identifier_value) as linking_identifier_value,
        min(linking_record_key) as linking_record_key,
        min(reason) as reason,
        count(*) as identifier_count,
    from registry
    group by change, previous_customer_id, customer_id, changed_at
)

select * from final
