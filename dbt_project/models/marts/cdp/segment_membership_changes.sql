-- Who entered and who exited each segment, build by build: append-only (incremental with
-- full_refresh: false, so not even --full-refresh rewrites it). A build compares the current
-- members with the members this history says each segment had, and appends the differences,
-- stamped with the build's start time. A segment dropped from vars.segment_models has all its
-- members exit.
with members as (
    select * from {{ ref('int_segment_members') }}
),

{% if is_incremental() %}
previous_members as (
    select segment_name, customer_id
    from {{ this }}
    qualify row_number() over (
        partition by segment_name, customer_id order by changed_at desc
    ) = 1 and change = 'entered'
),
{% else %}
previous_members as (
    select segment_name, customer_id from members where false
),
{% endif %}

entered as (
    select m.segment_name, m.customer_id
    from members as m
    left join previous_members as p
        on m.segment_name = p.segment_name and m.customer_id = p.customer_id
    where p.customer_id is null
),

exited as (
    select p.segment_name, p.customer_id
    from previous_members as p
    left join members as m
        on m.segment_name = p.segment_name and m.customer_id = p.customer_id
    where m.customer_id is null
),

final as (
    select segment_name, customer_id, 'entered' as change, {{ build_started_at() }} as changed_at
    from entered
    union all
    select segment_name, customer_id, 'exited' as change, {{ build_started_at() }} as changed_at
    from exited
)

select * from final
