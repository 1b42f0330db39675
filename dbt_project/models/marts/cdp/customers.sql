-- The golden record: one row per resolved customer.
-- Profile fields follow the survivorship rules of vars.customer_field_sources
-- (intermediate.int_customer_profile_values shows every candidate value and the survivor).
-- Consent per channel is the latest signal (intermediate.int_customer_consent_signals), with
-- the time the state last changed. Behaviour and orders come from cdp.customer_events (rolled
-- up per customer in intermediate.int_shopping_activity), pipeline from CRM
-- deals and tickets, purchase_propensity from intermediate.int_purchase_propensity. Day counts
-- are whole days (24 hours) before the reference time (macro segments_as_of).
{%- set channels = consent_channels() %}

-- Not materialized: read twice, once for the CRM contact ids only, DuckDB would otherwise copy
-- all 4.1M identifiers first (0.6 s of CPU in customers at a million customers).
with identifiers as not materialized (
    select * from {{ ref('customer_identifiers') }}
),

activity as (
    select * from {{ ref('int_shopping_activity') }}
),

profile_values as (
    select * from {{ ref('int_customer_profile_values') }} where is_survivor
),

consent_signals as (
    select * from {{ ref('int_customer_consent_signals') }}
),

propensity as (
    select * from {{ ref('int_purchase_propensity') }}
),

contacts as (
    select * from {{ ref('stg_crm__contacts') }}
),

deals as (
    select * from {{ ref('stg_crm__deals') }}
),

tickets as (
    select * from {{ ref('stg_crm__tickets') }}
),

identity as (
    select
        customer_id,
        min(first_seen_at) as first_seen_at,
        max(last_seen_at) as last_seen_at,
        count(*) as identifier_count,
        count(*) filter (where identifier_type = 'crm_contact_id') as crm_contact_count,
    from identifiers
    group by customer_id
),

profile as (
    select
        customer_id,
        {%- for field in customer_profile_fields() %}
        max(value) filter (where field = '{{ field }}') as {{ field }},
        {%- endfor %}
    from profile_values
    group by customer_id
),

-- Consent: the latest signal per channel (an opt-out wins a tie) and the start of the run of
-- signals that agree with it, which is when the state last changed.
consent_ordered as (
    select
        *,
        row_number() over (
            partition by customer_id, channel order by signal_at desc, is_opted_in, source, record_id
        ) as recency_rank,
    from consent_signals
),

consent_latest as (
    select * from consent_ordered where recency_rank = 1
),

consent_last_disagreement as (
    select o.customer_id, o.channel, min(o.recency_rank) as recency_rank
    from consent_ordered as o
    inner join consent_latest as l
        on o.customer_id = l.customer_id and o.channel = l.channel
    where o.is_opted_in <> l.is_opted_in
    group by o.customer_id, o.channel
),

consent as (
    select
        o.customer_id,
        o.channel,
        case when l.is_opted_in then 'opted_in' else 'opted_out' end as consent,
        arg_max(o.signal_at, o.recency_rank) as changed_at,
        arg_max(o.source, o.recency_rank) as changed_by,
    from consent_ordered as o
    inner join consent_latest as l
        on o.customer_id = l.customer_id and o.channel = l.channel
    left join consent_last_disagreement as d
        on o.customer_id = d.customer_id and o.channel = d.channel
    where o.recency_rank < coalesce(d.recency_rank, o.recency_rank + 1)
    group by o.customer_id, o.channel, l.is_opted_in
),

-- RFM scores 1-5 among customers who ordered: the share of buyers below (ties score alike).
rfm as (
    select
        customer_id,
        cast(least(5, 1 + floor(5 * percent_rank() over (order by last_order_at))) as integer) as rfm_recency_score,
        cast(least(5, 1 + floor(5 * percent_rank() over (order by order_count))) as integer) as rfm_frequency_score,
        cast(least(5, 1 + floor(5 * percent_rank() over (order by lifetime_revenue))) as integer) as rfm_monetary_score,
    from activity
    where order_count is not null
),

contact_customers as (
    select i.customer_id, c.contact_id
    from contacts as c
    inner join identifiers as i
        on i.identifier_type = 'crm_contact_id' and i.identifier_value = c.contact_id
),

deal_customers as (
    select distinct c.customer_id, d.deal_id, d.amount, d.is_closed
    from deals as d, unnest(d.contact_ids) as u(contact_id)
    inner join contact_customers as c on c.contact_id = u.contact_id
),

pipeline as (
    select
        customer_id,
        count(*) filter (where not is_closed) as open_deal_count,
        coalesce(sum(amount) filter (where not is_closed), 0) as pipeline_value,
    from deal_customers
    group by customer_id
),

ticket_customers as (
    select distinct c.customer_id, t.ticket_id, t.is_open
    from tickets as t, unnest(t.contact_ids) as u(contact_id)
    inner join contact_customers as c on c.contact_id = u.contact_id
),

support as (
    select customer_id, count(*) filter (where is_open) as open_ticket_count
    from ticket_customers
    group by customer_id
),

final as (
    select
        i.customer_id,
        p.first_name,
        p.last_name,
        p.email,
        p.phone,
        p.company_name,
        p.lifecycle_stage,
        {%- for channel, rules in channels.items() %}
        {{ channel }}_consent.consent as {{ channel }}_consent,
        {{ channel }}_consent.changed_at as {{ channel }}_consent_changed_at,
        {{ channel }}_consent.changed_by as {{ channel }}_consent_source,
        p.{{ 'email' if channel == 'email' else 'phone' }} is not null
            and coalesce({{ channel }}_consent.consent = 'opted_in', {{ 'true' if rules.contactable_without_signal else 'false' }})
            as is_{{ channel }}_contactable,
        {%- endfor %}
        i.first_seen_at,
        i.last_seen_at,
        coalesce(a.event_count, 0) as event_count,
        coalesce(a.page_view_count, 0) as page_view_count,
        coalesce(a.session_count, 0) as session_count,
        coalesce(a.order_count, 0) as order_count,
        coalesce(a.lifetime_revenue, 0) as lifetime_revenue,
        a.lifetime_revenue / a.order_count as average_order_value,
        a.first_order_at,
        a.last_order_at,
        cast(floor((epoch({{ segments_as_of() }}) - epoch(a.last_order_at)) / 86400) as integer) as days_since_last_order,
        coalesce(a.products_bought, []) as products_bought,
        a.last_cart_activity_at,
        a.last_cart_abandoned_at,
        r.rfm_recency_score,
        r.rfm_frequency_score,
        r.rfm_monetary_score,
        pp.purchase_propensity,
        coalesce(pl.open_deal_count, 0) as open_deal_count,
        coalesce(pl.pipeline_value, 0) as pipeline_value,
        coalesce(s.open_ticket_count, 0) as open_ticket_count,
        i.crm_contact_count,
        i.identifier_count,
    from identity as i
    left join profile as p on i.customer_id = p.customer_id
    {%- for channel in channels %}
    left join consent as {{ channel }}_consent
        on i.customer_id = {{ channel }}_consent.customer_id and {{ channel }}_consent.channel = '{{ channel }}'
    {%- endfor %}
    left join activity as a on i.customer_id = a.customer_id
    left join rfm as r on i.customer_id = r.customer_id
    left join propensity as pp on i.customer_id = pp.customer_id
    left join pipeline as pl on i.customer_id = pl.customer_id
    left join support as s on i.customer_id = s.customer_id
)

select * from final
