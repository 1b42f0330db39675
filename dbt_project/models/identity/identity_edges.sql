-- Links between usable identifiers: every pair of identifiers named by the same record. One
-- row per pair, with when the link was first seen, how many records make it and the first of
-- them (for explanations). A pair of types listed in never_link (identity_rules.yml) is kept
-- with is_allowed = false and does not link.
with occurrences as (
    select * from {{ ref('identity_occurrences') }}
),

identifiers as (
    select * from {{ ref('identity_identifiers') }} where node_id is not null
),

identifier_types as (
    select * from {{ ref('identity_identifier_types') }}
),

record_nodes as (
    select
        o.record_key,
        o.seen_at,
        o.source_file,
        o.source_line,
        i.node_id,
        i.identifier_type,
    from occurrences as o
    inner join identifiers as i
        on o.identifier_type = i.identifier_type and o.identifier_value = i.identifier_value
),

pairs as (
    select
        a.record_key,
        a.seen_at,
        a.source_file,
        a.source_line,
        a.node_id as src_node_id,
        b.node_id as dst_node_id,
        list_contains(t.never_links_with, b.identifier_type) as is_never_link,
    from record_nodes as a
    inner join record_nodes as b
        on a.record_key = b.record_key and a.node_id < b.node_id
    inner join identifier_types as t on a.identifier_type = t.identifier_type
),

final as (
    select
        src_node_id,
        dst_node_id,
        not any_value(is_never_link) as is_allowed,
        min(seen_at) as first_seen_at,
        count(distinct record_key) as record_count,
        arg_min(record_key, (seen_at, record_key)) as first_record_key,
        arg_min(source_file, (seen_at, record_key)) as first_source_file,
        arg_min(source_line, (seen_at, record_key)) as first_source_line,
    from pairs
    group by src_node_id, dst_node_id
)

select * from final
