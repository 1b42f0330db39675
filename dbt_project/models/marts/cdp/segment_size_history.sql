-- Every segment's size, entered and exited counts at every build: append-only (incremental
-- with full_refresh: false), the history behind "segment sizes over time".
with segments as (
    select * from {{ ref('segments') }}
),

final as (
    select
        segment_name,
        built_at,
        member_count,
        entered_count,
        exited_count,
    from segments
)

select * from final
