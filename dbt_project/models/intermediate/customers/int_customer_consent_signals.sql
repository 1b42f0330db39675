-- Every consent signal of a customer, per channel (vars.consent_signals): the CRM's
-- "Unsubscribed from all email" (email; as of the contact's last activity, else its create
-- date), opt-in and opt-out track events, and the identify trait that says unsubscribed
-- (true opts out, false opts in). cdp.customers keeps the latest per channel.
{%- set channels = consent_channels() %}

with identifiers as (
    select * from {{ ref('customer_identifiers') }}
),

contacts as (
    select * from {{ ref('stg_crm__contacts') }}
),

events as (
    select * from {{ ref('customer_events') }} where customer_id is not null
),

crm_signals as (
    select
        i.customer_id,
        'email' as channel,
        not c.is_unsubscribed_from_email as is_opted_in,
        coalesce(c.last_activity_at, c.created_at) as signal_at,
        'crm' as source,
        'Unsubscribed from all email: ' || cast(c.is_unsubscribed_from_email as varchar) as detail,
        c.contact_id as record_id,
    from contacts as c
    inner join identifiers as i
        on i.identifier_type = 'crm_contact_id' and i.identifier_value = c.contact_id
    where c.is_unsubscribed_from_email is not null
        and coalesce(c.last_activity_at, c.created_at) is not null
),

event_signals as (
    {%- for channel, rules in channels.items() %}
    select
        customer_id,
        '{{ channel }}' as channel,
        event_name not in {{ sql_in_list(rules.opt_out_events) }} as is_opted_in,
        event_at as signal_at,
        'event' as source,
        event_name as detail,
        message_id as record_id,
    from events
    where message_type = 'track'
        and (event_name in {{ sql_in_list(rules.opt_in_events) }} or event_name in {{ sql_in_list(rules.opt_out_events) }})
    {%- if rules.unsubscribed_trait %}
    union all
    select
        customer_id,
        '{{ channel }}' as channel,
        not {{ parse_boolean("traits ->> " ~ sql_string(rules.unsubscribed_trait)) }} as is_opted_in,
        event_at as signal_at,
        'event' as source,
        'identify {{ rules.unsubscribed_trait }}: ' || (traits ->> {{ sql_string(rules.unsubscribed_trait) }}) as detail,
        message_id as record_id,
    from events
    where message_type = 'identify'
        and {{ parse_boolean("traits ->> " ~ sql_string(rules.unsubscribed_trait)) }} is not null
    {%- endif %}
    {% if not loop.last %}union all{% endif %}
    {%- endfor %}
),

final as (
    select * from crm_signals
    union all
    select * from event_signals
)

select * from final
