-- Identifiers a rule kept from linking, with the rule and why. blocklist and super_node
-- identifiers belong to no customer. per_type_limit and never_link rows are identifiers whose
-- link to another identifier was refused: they still belong to the customer they joined
-- through their other links (customer_id).
with identifiers as (
    select * from {{ ref('identity_identifiers') }}
),

-- Only the components a per-type limit split: no link between others was refused. Node ids
-- are hashes, so a join on them is a full hash join, not a lookup in a dense range: at a
-- million customers the query took 1.3-1.4 s so, against 2.6-4.6 s joining every edge to
-- every component.
split_components as (
    select * from {{ ref('identity_components') }} where split_by_limit
),

edges as (
    select * from {{ ref('identity_edges') }}
),

resolved as (
    select * from {{ ref('customer_identifiers') }}
),

identifier_types as (
    select * from {{ ref('identity_identifier_types') }}
),

-- Usable identifiers by node id. Only the ends of refused and never_link links are looked up
-- in it, and their customer only at the end: at a million customers the query took 1.2-1.5 s
-- so (2.4-2.8 s CPU), against 2.4-2.9 s (4.6-5.4 s CPU) joining every identifier to its
-- customer first (4.1M rows, by type and value).
nodes as (
    select node_id, identifier_type, identifier_value, priority, occurrence_count
    from identifiers
    where node_id is not null
),

limited_types as (
    select identifier_type, priority, max_per_customer
    from identifier_types
    where max_per_customer is not null
),

-- An allowed link whose two ends ended in different components was refused by a per-type
-- limit (identity_components); both ends are in components it split.
cut_links as (
    select
        e.src_node_id,
        e.dst_node_id,
        cs.component_id as src_component_id,
        cd.component_id as dst_component_id,
    from edges as e
    inner join split_components as cs on e.src_node_id = cs.node_id
    inner join split_components as cd on e.dst_node_id = cd.node_id
    where e.is_allowed and cs.component_id <> cd.component_id
),

-- The identifiers of the components on either side of a cut link, per type.
component_counts as (
    select c.component_id, n.identifier_type, count(*) as identifier_count
    from split_components as c
    inner join nodes as n on c.node_id = n.node_id
    where c.component_id in (
        select src_component_id from cut_links union select dst_component_id from cut_links
    )
    group by c.component_id, n.identifier_type
),

-- The row goes to the weaker end of a refused link (the higher priority number).
refused_links as (
    select
        case when d.priority >= s.priority then d.node_id else s.node_id end as node_id,
        case when d.priority >= s.priority then s.identifier_type else d.identifier_type end as other_type,
        case when d.priority >= s.priority then s.identifier_value else d.identifier_value end as other_value,
        l.src_component_id,
        l.dst_component_id,
    from cut_links as l
    inner join nodes as s on l.src_node_id = s.node_id
    inner join nodes as d on l.dst_node_id = d.node_id
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
        n.identifier_type,
        n.identifier_value,
        'per_type_limit' as rule,
        string_agg(r.note, '; ' order by r.note) as detail,
        any_value(n.occurrence_count) as occurrence_count,
    from refusal_notes as r
    inner join nodes as n on r.node_id = n.node_id
    group by n.identifier_type, n.identifier_value
),

-- The links a never_link rule refused (none, often) and their ends, looked up by a semi join:
-- joined to nodes directly, DuckDB built hash tables of the 4.1M nodes for them, 1.0-1.3 s of
-- the query's 2.2-3.5 s of CPU at a million customers.
never_link_edges as (
    select src_node_id, dst_node_id from edges where not is_allowed
),

never_link_nodes as (
    select *
    from nodes
    where node_id in (
        select src_node_id from never_link_edges union all select dst_node_id from never_link_edges
    )
),

-- A never_link pair: the row goes to the weaker end (the higher priority number).
never_linked as (
    select
        case when s.priority > d.priority then s.node_id else d.node_id end as node_id,
        case when s.priority > d.priority then d.identifier_type else s.identifier_type end as other_type,
        case when s.priority > d.priority then d.identifier_value else s.identifier_value end as other_value,
    from never_link_edges as e
    inner join never_link_nodes as s on e.src_node_id = s.node_id
    inner join never_link_nodes as d on e.dst_node_id = d.node_id
),

never_link as (
    select
        n.identifier_type,
        n.identifier_value,
        'never_link' as rule,
        string_agg(
            'not linked to ' || l.other_type || ':' || l.other_value || ' (never_link '
                || n.identifier_type || ', ' || l.other_type || ')',
            '; ' order by l.other_type, l.other_value
        ) as detail,
        any_value(n.occurrence_count) as occurrence_count,
    from never_linked as l
    inner join nodes as n on l.node_id = n.node_id
    group by n.identifier_type, n.identifier_value
),

-- The customer each refused end belongs to through its other links.
linked_held_out as (
    select h.identifier_type, h.identifier_value, h.rule, h.detail, r.customer_id, h.occurrence_count,
    from (select * from limited union all select * from never_link) as h
    inner join resolved as r
        on h.identifier_type = r.identifier_type and h.identifier_value = r.identifier_value
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
    select * from linked_held_out
)

select * from final
