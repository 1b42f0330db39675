with resolved as (
    select * from {{ ref('identity_resolved') }}
),

final as (
    select
        customer_id,
        identifier_type,
        identifier_value,
        first_seen_at,
        last_seen_at,
        assigned_at,
    from resolved
)

select * from final
