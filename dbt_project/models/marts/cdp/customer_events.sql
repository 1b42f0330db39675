-- Every deduplicated event with its customer: by userId, else anonymousId, else the email or
-- phone in its traits. It is rebuilt from the current identity resolution on every run, so
-- when profiles merge their events are re-keyed to the surviving customer_id and a customer's
-- journey, from the first anonymous visit on, is one query. customer_id is NULL only when
-- every identifier the message carries was held out by a rule (identity.identifiers_held_out
-- says which). A session is a customer's run of events with no gap longer than
-- vars.session_timeout_minutes.
with messages as (
    select * from {{ ref('stg_events__messages') }}
),

identifiers as (
    select * from {{ ref('customer_identifiers') }}
),

keyed as (
    select
        m.message_id,
        coalesce(u.customer_id, a.customer_id, e.customer_id, p.customer_id) as customer_id,
        m.message_type,
        m.event_name,
        m.page_name,
        m.event_at,
        m.user_id,
        m.anonymous_id,
        m.order_id,
        m.order_revenue,
        m.properties,
        m.traits,
        m._source_file as source_file,
        m._source_line as source_line,
    from messages as m
    left join identifiers as u
        on u.identifier_type = 'user_id' and u.identifier_value = m.user_id
    left join identifiers as a
        on a.identifier_type = 'anonymous_id' and a.identifier_value = m.anonymous_id
    left join identifiers as e
        on e.identifier_type = 'email' and e.identifier_value = m.email
    left join identifiers as p
        on p.identifier_type = 'phone' and p.identifier_value = m.phone
),

session_starts as (
    select
        *,
        coalesce(
            event_at - lag(event_at) over (partition by customer_id order by event_at, message_id)
                > interval '{{ var("session_timeout_minutes") }} minutes',
            true
        ) as is_session_start,
    from keyed
),

session_numbers as (
    select
        *,
        sum(case when is_session_start then 1 else 0 end) over (
            partition by customer_id order by event_at, message_id
            rows between unbounded preceding and current row
        ) as session_number,
    from session_starts
),

sessions as (
    select
        *,
        min(event_at) over (partition by customer_id, session_number) as session_started_at,
    from session_numbers
),

final as (
    select
        message_id,
        customer_id,
        case
            when customer_id is not null
            then 'ses_' || substr(md5(customer_id || ':' || cast(epoch_ms(session_started_at) as varchar)), 1, 16)
        end as session_id,
        message_type,
        event_name,
        page_name,
        event_at,
        user_id,
        anonymous_id,
        order_id,
        order_revenue,
        properties,
        traits,
        source_file,
        source_line,
    from sessions
)

select * from final
