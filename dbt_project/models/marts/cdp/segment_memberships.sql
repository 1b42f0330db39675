-- Current members of every segment, with the time they last entered it (from
-- cdp.segment_membership_changes, so a rebuild or a full refresh keeps it).
with members as (
    select * from {{ ref('int_segment_members') }}
),

changes as (
    select * from {{ ref('segment_membership_changes') }}
),

last_entered as (
    select segment_name, customer_id, max(changed_at) as entered_at
    from changes
    where change = 'entered'
    group by segment_name, customer_id
),

final as (
    select
        m.segment_name,
        m.customer_id,
        e.entered_at,
    from members as m
    left join last_entered as e
        on m.segment_name = e.segment_name and m.customer_id = e.customer_id
)

select * from final
