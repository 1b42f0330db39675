-- Links between usable identifiers: every distinct pair of identifiers named by the same
-- record (identity_distinct_pairs), between their nodes (the lower node_id first), with when
-- the link was first seen, how many records make it and the first of them (for
-- explanations). A pair of types listed in never_link (identity_rules.yml) is kept with
-- is_allowed = false and does not link.
--
-- A node_id is a hash of the identifier (macro identity_node_id, as identity_identifiers
-- computes it), so the pairs are not joined to the 4.1M identifiers at a million customers:
-- only the few held out (no node_id) are looked up, to leave their pairs out.
with distinct_pairs as (
    select * from {{ ref('identity_distinct_pairs') }}
),

held_out as (
    select identifier_type, identifier_value
    from {{ ref('identity_identifiers') }}
    where node_id is null
),

identifier_types as (
    select * from {{ ref('identity_identifier_types') }}
),

usable_pairs as (
    select
        {{ identity_node_id('p.a_type', 'p.a_value') }} as a_node_id,
        {{ identity_node_id('p.b_type', 'p.b_value') }} as b_node_id,
        p.*,
    from distinct_pairs as p
    anti join held_out as a on p.a_type = a.identifier_type and p.a_value = a.identifier_value
    anti join held_out as b on p.b_type = b.identifier_type and p.b_value = b.identifier_value
),

node_pairs as (
    select
        least(a_node_id, b_node_id) as src_node_id,
        greatest(a_node_id, b_node_id) as dst_node_id,
        case when a_node_id < b_node_id then a_type else b_type end as src_type,
        case when a_node_id < b_node_id then b_type else a_type end as dst_type,
        first_seen_at,
        record_count,
        first_record_key,
        first_source_file,
        first_source_line,
    from usable_pairs
),

-- Both ends' types must be in the rules, as identity_identifiers' rows are.
final as (
    select
        n.src_node_id,
        n.dst_node_id,
        not list_contains(s.never_links_with, n.dst_type) as is_allowed,
        n.first_seen_at,
        n.record_count,
        n.first_record_key,
        n.first_source_file,
        n.first_source_line,
    from node_pairs as n
    inner join identifier_types as s on n.src_type = s.identifier_type
    semi join identifier_types as d on n.dst_type = d.identifier_type
)

select * from final
