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

identifier_types as (
    select * from {{ ref('identity_identifier_types') }}
),

usable as (
    select i.node_id, i.identifier_type, i.identifier_value, i.priority, i.occurrence_count, r.customer_id
    from identifiers as i
    inner join resolved as r
        on i.identifier_type = r.identifier_type and i.identifier_value = r.identifier_value
),

limited_types as (
    select identifier_type, priority, max_per_customer
    from identifier_types
    where max_per_customer is not null
),

component_counts as (
    select c.component_id, u.identifier_type, count(*) as identifier_count
    from components as c
    inner join usable as u on c.node_id = u.node_id
    group by c.component_id, u.identifier_type
),

-- An allowed link whose two ends ended in different components was refused by a per-type
-- limit (identity_components). The row goes to its weaker end (the higher priority number).
refused_links as (
    select
        case when d.priority >= s.priority then d.node_id else s.node_id end as node_id,
        case when d.priority >= s.priority then s.identifier_type else d.identifier_type end as other_type,
        case when d.priority >= s.priority then s.identifier_value else d.identifier_value end as other_value,
        cs.component_id as src_component_id,
        cd.component_id as dst_component_id,
    from edges as e
    inner join components as cs on e.src_node_id = cs.node_id
    inner join components as cd on e.dst_node_id = cd.node_id
    inner join usable as s on e.src_node_id = s.node_id
    inner join usable as d on e.dst_node_id = d.node_id
    where e.is_allowed and cs.component_id <> cd.component_id
),

refusal_notes as (
    select
        r.node_id,
        'not linked to ' || r.other_type || ':' || r.other_value || ': the customer would hold '
            || string_agg(
                (coalesce(a.identifier_count, 0) + coalesce(b.identifier_count, 0)) || ' '
                    || t.identifier_type || ' (limit ' || t.max_per_customer || ')',
                ', ' order by t.priority
            ) as note,
    from refused_links as r
    cross join limited_types as t
    left join component_counts as a
        on r.src_component_id = a.component_id and t.identifier_type = a.identifier_type
    left join component_counts as b
        on r.dst_component_id = b.component_id and t.identifier_type = b.identifier_type
    where coalesce(a.identifier_count, 0) + coalesce(b.identifier_count, 0) > t.max_per_customer
    group by r.node_id, r.other_type, r.other_value
),

limited as (
    select
        u.identifier_type,
        u.identifier_value,
        'per_type_limit' as rule,
        string_agg(n.note, '; ' order by n.note) as detail,
        any_value(u.customer_id) as customer_id,
        any_value(u.occurrence_count) as occurrence_count,
    from refusal_notes as n
    inner join usable as u on n.node_id = u.node_id
    group by u.identifier_type, u.identifier_value
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
