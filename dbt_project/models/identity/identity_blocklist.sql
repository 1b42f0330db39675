-- Values that are never identifiers, one row per identifier type and pattern (an entry for
-- every type, "*", is listed once per type), from the blocklist of identity_rules.yml.
with rules as (
    select * from {{ ref('identity_rules') }}
),

entries as (
    select
        unnest(
            from_json(
                blocklist,
                '[{"identifier_type": "VARCHAR", "match_type": "VARCHAR", "pattern": "VARCHAR",
                   "reason": "VARCHAR"}]'
            ),
            recursive := true
        ),
    from rules
),

final as (
    select identifier_type, match_type, pattern, reason
    from entries
)

select * from final
