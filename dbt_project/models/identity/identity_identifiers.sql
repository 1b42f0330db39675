-- One row per distinct identifier. Identifiers held out by a rule (the blocklist, or a super
-- node: named in the same records as more distinct people-level identifiers than its type's
-- super_node_threshold) get no node_id and never link anything; the others get a dense
-- node_id for connected components. The rules come from identity_rules.yml.
with occurrences as (
    select * from {{ ref('identity_occurrences') }}
),

identifier_types as (
    select * from {{ ref('identity_identifier_types') }}
),

blocklist as (
    select * from {{ ref('identity_blocklist') }}
),

identifiers as (
    select
        identifier_type,
        identifier_value,
        min(seen_at) as first_seen_at,
        max(seen_at) as last_seen_at,
        count(*) as occurrence_count,
    from occurrences
    group by identifier_type, identifier_value
),

blocked as (
    select
        i.identifier_type,
        i.identifier_value,
        b.reason || ' (blocklist '
            || case b.match_type when 'exact' then 'value' else 'pattern' end
            || ' ''' || b.pattern || ''')' as detail,
    from identifiers as i
    inner join blocklist as b
        on b.identifier_type = i.identifier_type
        and (
            (b.match_type = 'exact' and lower(i.identifier_value) = b.pattern)
            or (b.match_type = 'regex' and regexp_full_match(i.identifier_value, b.pattern))
        )
    qualify row_number() over (
        partition by i.identifier_type, i.identifier_value order by b.match_type, b.pattern
    ) = 1
),

unblocked_occurrences as (
    select o.record_key, o.identifier_type, o.identifier_value
    from occurrences as o
    anti join blocked as b
        on o.identifier_type = b.identifier_type and o.identifier_value = b.identifier_value
),

people_level_neighbours as (
    select
        a.identifier_type,
        a.identifier_value,
        count(distinct b.identifier_type || ':' || b.identifier_value) as neighbour_count,
    from unblocked_occurrences as a
    inner join unblocked_occurrences as b
        on a.record_key = b.record_key
        and not (a.identifier_type = b.identifier_type and a.identifier_value = b.identifier_value)
    inner join identifier_types as t
        on b.identifier_type = t.identifier_type and t.is_people_level
    group by a.identifier_type, a.identifier_value
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

final as (
    select
        case
            when held_out_rule is null
            then row_number() over (
                partition by held_out_rule is null order by identifier_type, identifier_value
            ) - 1
        end as node_id,
        *,
    from classified
)

select * from final
