-- Links between usable identifiers: every distinct pair of identifiers named by the same
-- record (identity_distinct_pairs), between their nodes (the lower node_id first), with when
-- the link was first seen, how many records make it and the first of them (for
-- explanations). A pair of types listed in never_link (identity_rules.yml) is kept with
-- is_allowed = false and does not link.
with distinct_pairs as (
    select * from {{ ref('identity_distinct_pairs') }}
),

identifiers as (
    select * from {{ ref('identity_identifiers') }} where node_id is not null
),

identifier_types as (
    select * from {{ ref('identity_identifier_types') }}
),

node_pairs as (
    select
        least(a.node_id, b.node_id) as src_node_id,
        greatest(a.node_id, b.node_id) as dst_node_id,
        case when a.node_id < b.node_id then a.identifier_type else b.identifier_type end as src_type,
        case when a.node_id < b.node_id then b.identifier_type else a.identifier_type end as dst_type,
        p.first_seen_at,
        p.record_count,
        p.first_record_key,
        p.first_source_file,
        p.first_source_line,
    from distinct_pairs as p
    inner join identifiers as a
        on p.a_type = a.identifier_type and p.a_value = a.identifier_value
    inner join identifiers as b
        on p.b_type = b.identifier_type and p.b_value = b.identifier_value
),

final as (
    select
        n.src_node_id,
        n.dst_node_id,
        not list_contains(t.never_links_with, n.dst_type) as is_allowed,
        n.first_seen_at,
        n.record_count,
        n.first_record_key,
        n.first_source_file,
        n.first_source_line,
    from node_pairs as n
    inner join identifier_types as t on n.src_type = t.identifier_type
)

select * from final
