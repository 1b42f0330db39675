-- Every usable identifier with its customer: the customer the registry (identity_registry)
-- holds for it now. The registry keeps ids stable from run to run; see docs/identity.md.
with identifiers as (
    select * from {{ ref('identity_identifiers') }} where node_id is not null
),

registry as (
    select * from {{ ref('identity_registry') }}
),

current_customers as (
    select identifier_type, identifier_value, customer_id, changed_at as assigned_at
    from registry
    qualify row_number() over (
        partition by identifier_type, identifier_value order by changed_at desc
    ) = 1
),

final as (
    select
        c.customer_id,
        i.identifier_type,
        i.identifier_value,
        i.first_seen_at,
        i.last_seen_at,
        i.occurrence_count,
        c.assigned_at,
    from identifiers as i
    left join current_customers as c
        on i.identifier_type = c.identifier_type and i.identifier_value = c.identifier_value
)

select * from final
