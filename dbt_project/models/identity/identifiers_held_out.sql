-- Identifiers a rule kept from linking, with the rule and why. blocklist and super_node
-- identifiers belong to no customer. per_type_limit and never_link rows are identifiers whose
-- link to another identifier was refused: they still belong to the customer they joined
-- through their other links (customer_id).
with identifiers as (
    select * from {{ ref('identity_identifiers') }}
),

components as (
    select * from {{ ref('identity_components') }}
),

edges as (
    select * from {{ ref('identity_edges') }}
),

resolved as (
    select * from {{ ref('identity_resolved') }}
),

usable as (
    select i.node_id, i.identifier_type, i.identifier_value, i.priority, i.occurrence_count, r.customer_id
    from identifiers as i
    inner join resolved as r
        on i.identifier_type = r.identifier_type and i.identifier_value = r.identifier_value
),

limited as (
    select
        u.identifier_type,
        u.identifier_value,
        'per_type_limit' as rule,
        c.refused_detail as detail,
        u.customer_id,
        u.occurrence_count,
    from components as c
    inner join usable as u on c.node_id = u.node_id
    where c.refused_detail is not null
),

-- A never_link pair: the row goes to the weaker end (the higher priority number).
never_linked as (
    select
        case when s.priority > d.priority then s.node_id else d.node_id end as node_id,
        case when s.priority > d.priority then d.identifier_type else s.identifier_type end as other_type,
        case when s.priority > d.priority then d.identifier_value else s.identifier_value end as other_value,
    from edges as e
    inner join usable as s on e.src_node_id = s.node_id
    inner join usable as d on e.dst_node_id = d.node_id
    where not e.is_allowed
),

never_link as (
    select
        u.identifier_type,
        u.identifier_value,
        'never_link' as rule,
        string_agg(
            'not linked to ' || n.other_type || ':' || n.other_value || ' (never_link '
                || u.identifier_type || ', ' || n.other_type || ')',
            '; ' order by n.other_type, n.other_value
        ) as detail,
        any_value(u.customer_id) as customer_id,
        any_value(u.occurrence_count) as occurrence_count,
    from never_linked as n
    inner join usable as u on n.node_id = u.node_id
    group by u.identifier_type, u.identifier_value
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
    select * from limited
    union all
    select * from never_link
)

select * from final
