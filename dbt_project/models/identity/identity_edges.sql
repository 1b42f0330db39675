-- Links between usable identifiers: every pair of identifiers named by the same record. One
-- row per pair, with when the link was first seen, how many records make it and the first of
-- them (for explanations). A pair of types listed in never_link (identity_rules.yml) is kept
-- with is_allowed = false and does not link.
with pairs as (
    select * from {{ ref('identity_pairs') }}
),

identifiers as (
    select * from {{ ref('identity_identifiers') }} where node_id is not null
),

identifier_types as (
    select * from {{ ref('identity_identifier_types') }}
),

-- Each record's pairs of usable identifiers as nodes, the lower node_id first.
node_pairs as (
    select
        p.record_key,
        p.seen_at,
        p.source_file,
        p.source_line,
        least(a.node_id, b.node_id) as src_node_id,
        greatest(a.node_id, b.node_id) as dst_node_id,
        case when a.node_id < b.node_id then a.identifier_type else b.identifier_type end as src_type,
        case when a.node_id < b.node_id then b.identifier_type else a.identifier_type end as dst_type,
    from pairs as p
    inner join identifiers as a
        on p.a_type = a.identifier_type and p.a_value = a.identifier_value
    inner join identifiers as b
        on p.b_type = b.identifier_type and p.b_value = b.identifier_value
),

-- One row per pair of nodes: its first record (by time, then key) with the pair's record count.
final as (
    select
        n.src_node_id,
        n.dst_node_id,
        not list_contains(t.never_links_with, n.dst_type) as is_allowed,
        n.seen_at as first_seen_at,
        count(*) over pair as record_count,  -- a record names a pair once (identity_pairs)
        n.record_key as first_record_key,
        n.source_file as first_source_file,
        n.source_line as first_source_line,
    from node_pairs as n
    inner join identifier_types as t on n.src_type = t.identifier_type
    window pair as (partition by n.src_node_id, n.dst_node_id)
    qualify row_number() over (pair order by n.seen_at, n.record_key) = 1
)

select * from final
