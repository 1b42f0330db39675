-- One row per distinct identifier. Identifiers held out by a rule (the blocklist, or a super
-- node: named in the same records as more distinct people-level identifiers than its type's
-- super_node_threshold) get no node_id and never link anything; the others get a node_id for
-- connected components: a hash of (type, value) (macro identity_node_id), so identity_edges
-- computes both ends of a link from the pair itself instead of looking them up here. The
-- rules come from identity_rules.yml.
--
-- Incremental: a run classifies again only the identifiers whose row can have changed, those
-- of the identity_identifier_counts rows and of both ends of the identity_distinct_pairs rows
-- built since the newest _built_at here (delete+insert by the identifier); every other row
-- keeps its counts, its neighbours and so its rule. The pre-hooks empty the table, so that
-- the run classifies every identifier, when identity_occurrences lost rows since (records
-- collected again: an identifier or a pair may be gone, and its rows built up to the newest
-- _built_at here no longer add up to the occurrence counts here; macro
-- rebuild_if_rows_removed_from, as identity_identifier_counts does) or when the rules the rows
-- were classified by changed (rules_fingerprint: the identifier types, the blocklist and
-- DuckDB's hash, which makes the node ids). At a million customers with 1% new data (83,091
-- counts rows and 43,587 pairs built since) the model took 2.4-3.3 s, against 4.0-5.1 s as a
-- table rebuilt every run (the same rows).
-- depends_on: {{ ref('identity_occurrences') }}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['identifier_type', 'identifier_value'],
    on_schema_change='fail',
    pre_hook=[
        "{{ rebuild_if_columns_changed(added={'_built_at': 'timestamptz', 'rules_fingerprint': 'varchar'}) }}",
        "{{ rebuild_if_rows_removed_from(ref('identity_occurrences'), 'occurrence_count') }}",
        "{% if is_incremental() %}delete from {{ this }} where rules_fingerprint <> {{ identity_identifiers_rules_fingerprint() }}{% endif %}",
    ],
    post_hook=["{{ fail_on_repeated_keys(['identifier_type', 'identifier_value']) }}"],
) }}

{%- set watermark = "(select coalesce(max(_built_at), '-infinity'::timestamptz) from " ~ this ~ ")" %}

-- Not materialized: each is read more than once (the changed identifiers, the neighbours),
-- and DuckDB then copied the whole table into memory. On the 1M warehouse the select took
-- 0.27-0.40 s with nothing new, against 0.69-0.89 s materialized, and 1.70-1.82 s built from
-- scratch against 2.14-2.29 s (two or three warm runs each, the same rows).
with counts as not materialized (
    select identifier_type, identifier_value, first_seen_at, last_seen_at, occurrence_count, _built_at,
    from {{ ref('identity_identifier_counts') }}
),

distinct_pairs as not materialized (
    select a_type, a_value, b_type, b_value, _built_at from {{ ref('identity_distinct_pairs') }}
),

{% if is_incremental() %}
-- The identifiers classified again: new occurrences, or a new or recounted pair.
changed as (
    select identifier_type, identifier_value from counts where _built_at > {{ watermark }}
    union
    select a_type, a_value from distinct_pairs where _built_at > {{ watermark }}
    union
    select b_type, b_value from distinct_pairs where _built_at > {{ watermark }}
),

identifiers as (
    select c.* exclude (_built_at)
    from counts as c
    semi join changed as ch
        on c.identifier_type = ch.identifier_type and c.identifier_value = ch.identifier_value
),
{% else %}
identifiers as (
    select * exclude (_built_at) from counts
),
{% endif %}

identifier_types as (
    select * from {{ ref('identity_identifier_types') }}
),

blocklist as (
    select * from {{ ref('identity_blocklist') }}
),

-- Exact entries match by a hash join; each regex entry is inlined as a constant pattern
-- (macro blocklist_regex_entries), which DuckDB compiles once instead of once per row.
blocklist_matches as (
    select i.identifier_type, i.identifier_value, b.match_type, b.pattern, b.reason,
    from identifiers as i
    inner join blocklist as b
        on b.match_type = 'exact'
        and b.identifier_type = i.identifier_type
        and lower(i.identifier_value) = b.pattern
    {%- for entry in blocklist_regex_entries() %}
    union all
    select identifier_type, identifier_value, 'regex', {{ entry.pattern_literal }}, {{ entry.reason_literal }},
    from identifiers
    where identifier_type = {{ entry.type_literal }}
        and regexp_full_match(identifier_value, {{ entry.pattern_literal }})
    {%- endfor %}
),

blocked as (
    select
        identifier_type,
        identifier_value,
        reason || ' (blocklist '
            || case match_type when 'exact' then 'value' else 'pattern' end
            || ' ''' || pattern || ''')' as detail,
    from blocklist_matches
    qualify row_number() over (
        partition by identifier_type, identifier_value order by match_type, pattern
    ) = 1
),

-- Each identifier with every distinct identifier it shares a record with (both ends of
-- each pair). An incremental run reads the pairs of the identifiers it classifies, matched
-- on a hash so that DuckDB builds the join's hash table from them (as
-- identity_distinct_pairs does); a pair of another identifier whose hash equals one of theirs
-- is counted for that other identifier, which is not written.
neighbours as (
    select a_type as identifier_type, a_value as identifier_value, b_type as neighbour_type, b_value as neighbour_value
    from distinct_pairs
    {%- if is_incremental() %}
    where hash(a_type, a_value) in (select hash(identifier_type, identifier_value) from identifiers)
    {%- endif %}
    union all
    select b_type, b_value, a_type, a_value
    from distinct_pairs
    {%- if is_incremental() %}
    where hash(b_type, b_value) in (select hash(identifier_type, identifier_value) from identifiers)
    {%- endif %}
),

-- Blocked neighbours are not counted. A neighbour not classified again keeps the rule it has
-- here: the blocklist is the same (else the pre-hook emptied the table).
blocked_neighbours as (
    select identifier_type, identifier_value from blocked
    {%- if is_incremental() %}
    union
    select identifier_type, identifier_value from {{ this }} where held_out_rule = 'blocklist'
    {%- endif %}
),

-- How many unblocked people-level identifiers each identifier shares records with. A blocked
-- identifier is counted too, and stays held out by the blocklist (classified prefers it):
-- leaving it out here as well took a second anti join, and the model 7.3-8.0 s against
-- 5.5-6.2 s without it at a million customers (same rows).
people_level_neighbours as (
    select
        n.identifier_type,
        n.identifier_value,
        count(*) as neighbour_count,
    from neighbours as n
    inner join identifier_types as t
        on n.neighbour_type = t.identifier_type and t.is_people_level
    anti join blocked_neighbours as bn
        on n.neighbour_type = bn.identifier_type and n.neighbour_value = bn.identifier_value
    group by n.identifier_type, n.identifier_value
),

super_nodes as (
    select
        n.identifier_type,
        n.identifier_value,
        'seen with ' || n.neighbour_count || ' people-level identifiers (threshold '
            || t.super_node_threshold || ')' as detail,
    from people_level_neighbours as n
    inner join identifier_types as t on n.identifier_type = t.identifier_type
    where n.neighbour_count > t.super_node_threshold
),

classified as (
    select
        i.*,
        t.priority,
        t.max_per_customer,
        case when b.detail is not null then 'blocklist' when s.detail is not null then 'super_node' end as held_out_rule,
        coalesce(b.detail, s.detail) as held_out_detail,
    from identifiers as i
    inner join identifier_types as t on i.identifier_type = t.identifier_type
    left join blocked as b
        on i.identifier_type = b.identifier_type and i.identifier_value = b.identifier_value
    left join super_nodes as s
        on i.identifier_type = s.identifier_type and i.identifier_value = s.identifier_value
),

-- A hash, not a row number in (type, value) order: at a million customers the model took
-- 3.9 s against 6.3 s with the row number (a sort of 4.1M strings), and identity_edges 2.1 s
-- against 5.0 s (no join of 5.5M pairs to 4.1M identifiers). identity_components refuses two
-- values that share a hash.
final as (
    select
        case
            when held_out_rule is null
            then {{ identity_node_id('identifier_type', 'identifier_value') }}
        end as node_id,
        *,
        {{ build_started_at() }} as _built_at,
        {{ identity_identifiers_rules_fingerprint() }} as rules_fingerprint,
    from classified
)

select * from final
