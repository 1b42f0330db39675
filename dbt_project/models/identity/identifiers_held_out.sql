-- Identifiers a rule kept from linking, with the rule and why. blocklist and super_node
-- identifiers belong to no customer; a per_type_limit row is an identifier whose link to
-- another customer was refused (it still belongs to the customer it was linked to first).
with identifiers as (
    select * from {{ ref('identity_identifiers') }}
),

resolved as (
    select * from {{ ref('identity_resolved') }}
),

final as (
    select
        identifier_type,
        identifier_value,
        held_out_rule as rule,
        held_out_detail as detail,
        null::varchar as customer_id,
        occurrence_count,
    from identifiers
    where held_out_rule is not null
    union all
    select
        identifier_type,
        identifier_value,
        'per_type_limit' as rule,
        refused_detail as detail,
        customer_id,
        occurrence_count,
    from resolved
    where refused_detail is not null
)

select * from final
