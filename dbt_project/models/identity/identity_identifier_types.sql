-- One row per identifier type of identity_rules.yml (validated by the identity_rules model):
-- how its values are normalized, its priority (1 = strongest), the most one customer may hold,
-- whether it names one person, its super-node threshold, the types it never links with and
-- the extra event fields it is read from.
with rules as (
    select * from {{ ref('identity_rules') }}
),

types as (
    select
        unnest(
            from_json(
                identifier_types,
                '[{"identifier_type": "VARCHAR", "description": "VARCHAR", "normalizer": "VARCHAR",
                   "priority": "INTEGER", "max_per_customer": "INTEGER", "is_people_level": "BOOLEAN",
                   "super_node_threshold": "INTEGER", "never_links_with": ["VARCHAR"],
                   "event_fields": ["VARCHAR"]}]'
            ),
            recursive := true
        ),
        default_country_code,
    from rules
),

final as (
    select
        identifier_type,
        description,
        normalizer,
        case when normalizer = 'phone' then default_country_code end as default_country_code,
        priority,
        max_per_customer,
        is_people_level,
        super_node_threshold,
        never_links_with,
        event_fields,
        -- What identity_occurrences collects by: when it changes, that table is rebuilt.
        md5(string_agg(
            concat_ws('|', identifier_type, normalizer, default_country_code, event_fields::varchar),
            ';' order by identifier_type
        ) over ()) as rules_version,
    from types
)

select * from final
