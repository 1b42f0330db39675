-- Every deduplicated event with its customer: by userId, else anonymousId, else the email or
-- phone in its traits. customer_id is NULL only when every identifier the message carries
-- was held out by a rule (identity.identifiers_held_out says which).
with messages as (
    select * from {{ ref('stg_events__messages') }}
),

resolved as (
    select * from {{ ref('identity_resolved') }}
),

final as (
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
    left join resolved as u
        on u.identifier_type = 'user_id' and u.identifier_value = m.user_id
    left join resolved as a
        on a.identifier_type = 'anonymous_id' and a.identifier_value = m.anonymous_id
    left join resolved as e
        on e.identifier_type = 'email' and e.identifier_value = m.email
    left join resolved as p
        on p.identifier_type = 'phone' and p.identifier_value = m.phone
)

select * from final
