-- One row per distinct identifier. Identifiers held out by a rule (the blocklist, or a super
-- node: named in the same records as more distinct people-level identifiers than its type's
-- super_node_threshold) get no node_id and never link anything; the others get a node_id for
-- connected components: a hash of (type, value) (macro identity_node_id), so identity_edges
-- computes both ends of a link from the pair itself instead of looking them up here. The
-- rules come from identity_rules.yml.
with identifiers as (
    select identifier_type, identifier_value, first_seen_at, last_seen_at, occurrence_count,
    from {{ ref('identity_identifier_counts') }}
),

distinct_pairs as (
    select a_type, a_value, b_type, b_value from {{ ref('identity_distinct_pairs') }}
),

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
-- each pair).
neighbours as (
    select a_type as identifier_type, a_value as identifier_value, b_type as neighbour_type, b_value as neighbour_value
    from distinct_pairs
    union all
    select b_type, b_value, a_type, a_value
    from distinct_pairs
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
    anti join blocked as bn
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
-- against 5.0 s (no join of 5.5M pairs to 4.1M identifiers). Two values that share a hash
-- fail node_id's unique test, and identity_components refuses them.
final as (
    select
        case
            when held_out_rule is null
            then {{ identity_node_id('identifier_type', 'identifier_value') }}
        end as node_id,
        *,
    from classified
)

select * from final
