-- Links between usable identifiers: every distinct pair of identifiers named by the same
-- record (identity_distinct_pairs), between their nodes (the lower node_id first), with when
-- the link was first seen, how many records make it and the first of them (for
-- explanations). A pair of types listed in never_link (identity_rules.yml) is kept with
-- is_allowed = false and does not link.
--
-- A node_id is a hash of the identifier (macro identity_node_id, as identity_identifiers
-- computes it), so the pairs are not joined to the 4.1M identifiers at a million customers:
-- only the few held out (no node_id) are looked up, to leave their pairs out.
--
-- Incremental: a link depends on its pair and on whether either end is held out. A run
-- makes again the links of the identity_distinct_pairs rows built since the newest _built_at
-- here, and of every pair either end of which identity_identifiers classified again since
-- (delete+insert by the link); the post-hook then deletes the links of the identifiers held
-- out now, so that one held out since it was linked keeps none. A pair is gone only when
-- records were collected again; identity_occurrences then lost rows, so identity_identifiers
-- was emptied and classified every identifier again (as when the rules change: its
-- rules_fingerprint covers never_link), and the pre-hook empties this table too.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['src_node_id', 'dst_node_id'],
    on_schema_change='fail',
    pre_hook=[
        "{{ rebuild_if_columns_changed(added={'_built_at': 'timestamptz'}) }}",
        "{{ identity_empty_if_identifiers_rebuilt() }}",
    ],
    post_hook=[
        "{{ identity_delete_held_out_nodes(['src_node_id', 'dst_node_id']) }}",
        "{{ fail_on_repeated_keys(['src_node_id', 'dst_node_id']) }}",
    ],
) }}

{%- set watermark = "(select coalesce(max(_built_at), '-infinity'::timestamptz) from " ~ this ~ ")" %}

with distinct_pairs as not materialized (
    select * exclude (_built_at) from {{ ref('identity_distinct_pairs') }}
    {%- if is_incremental() %}
    where _built_at > {{ watermark }}
    {%- endif %}
),

held_out as (
    select identifier_type, identifier_value
    from {{ ref('identity_identifiers') }}
    where node_id is null
),

identifier_types as (
    select * from {{ ref('identity_identifier_types') }}
),

{% if is_incremental() %}
-- The identifiers classified again since: new ones, and those whose counts or neighbours
-- changed (identity_identifiers' incremental run), held out or not.
reclassified as (
    select hash(identifier_type, identifier_value) as identifier_hash
    from {{ ref('identity_identifiers') }}
    where _built_at > {{ watermark }}
),

-- Their pairs, matched on a hash as in identity_identifiers (DuckDB builds the join's hash
-- table from the few identifiers). A pair of another identifier whose hash equals one of
-- theirs is made again as it is.
pairs as (
    select * from distinct_pairs
    union
    select * exclude (_built_at) from {{ ref('identity_distinct_pairs') }}
    where hash(a_type, a_value) in (select identifier_hash from reclassified)
    union
    select * exclude (_built_at) from {{ ref('identity_distinct_pairs') }}
    where hash(b_type, b_value) in (select identifier_hash from reclassified)
),
{% else %}
pairs as (
    select * from distinct_pairs
),
{% endif %}

usable_pairs as (
    select
        {{ identity_node_id('p.a_type', 'p.a_value') }} as a_node_id,
        {{ identity_node_id('p.b_type', 'p.b_value') }} as b_node_id,
        p.*,
    from pairs as p
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
        {{ build_started_at() }} as _built_at,
    from node_pairs as n
    inner join identifier_types as s on n.src_type = s.identifier_type
    semi join identifier_types as d on n.dst_type = d.identifier_type
)

select * from final
