-- The single customer view: one row per resolved customer. Names, company and lifecycle
-- stage come from the CRM (the most recently created contact), else the latest identify
-- traits; email and phone are the customer's most recently seen ones (junk values never
-- qualify: they are held out of identity); behaviour from events; pipeline from deals and
-- tickets.
with resolved as (
    select * from {{ ref('identity_resolved') }}
),

events as (
    select * from {{ ref('customer_events') }} where customer_id is not null
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
        arg_max(identifier_value, last_seen_at) filter (where identifier_type = 'email') as email,
        arg_max(identifier_value, last_seen_at) filter (where identifier_type = 'phone') as phone,
    from resolved
    group by customer_id
),

contact_customers as (
    select r.customer_id, c.*
    from contacts as c
    inner join resolved as r
        on r.identifier_type = 'crm_contact_id' and r.identifier_value = c.contact_id
),

crm_profile as (
    select
        customer_id,
        arg_max(first_name, created_at) filter (where first_name is not null) as first_name,
        arg_max(last_name, created_at) filter (where last_name is not null) as last_name,
        arg_max(company_name, created_at) filter (where company_name is not null) as company_name,
        arg_max(lifecycle_stage, created_at) filter (where lifecycle_stage is not null) as lifecycle_stage,
        bool_or(is_unsubscribed_from_email) as is_unsubscribed_from_email,
        count(*) as crm_contact_count,
    from contact_customers
    group by customer_id
),

event_profile as (
    select
        customer_id,
        arg_max(coalesce(traits ->> 'firstName', traits ->> 'first_name'), event_at)
            filter (where message_type = 'identify' and coalesce(traits ->> 'firstName', traits ->> 'first_name') is not null) as first_name,
        arg_max(coalesce(traits ->> 'lastName', traits ->> 'last_name'), event_at)
            filter (where message_type = 'identify' and coalesce(traits ->> 'lastName', traits ->> 'last_name') is not null) as last_name,
        count(*) as event_count,
        count(*) filter (where message_type = 'page') as page_view_count,
        count(distinct order_id) filter (where event_name = 'Order Completed') as order_count,
        max(event_at) filter (where event_name = 'Order Completed') as last_order_at,
        max(event_at) filter (where event_name in ('Product Added', 'Checkout Started')) as last_cart_activity_at,
        min(event_at) as first_event_at,
        max(event_at) as last_event_at,
    from events
    group by customer_id
),

orders as (
    select customer_id, order_id, max(order_revenue) as revenue
    from events
    where event_name = 'Order Completed' and order_id is not null
    group by customer_id, order_id
),

revenue as (
    select customer_id, sum(revenue) as lifetime_revenue
    from orders
    group by customer_id
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
        coalesce(c.first_name, e.first_name) as first_name,
        coalesce(c.last_name, e.last_name) as last_name,
        i.email,
        i.phone,
        c.company_name,
        c.lifecycle_stage,
        coalesce(c.is_unsubscribed_from_email, false) as is_unsubscribed_from_email,
        i.first_seen_at,
        i.last_seen_at,
        coalesce(e.event_count, 0) as event_count,
        coalesce(e.page_view_count, 0) as page_view_count,
        coalesce(e.order_count, 0) as order_count,
        coalesce(r.lifetime_revenue, 0) as lifetime_revenue,
        case when e.order_count > 0 then r.lifetime_revenue / e.order_count end as average_order_value,
        e.last_order_at,
        e.last_cart_activity_at,
        coalesce(p.open_deal_count, 0) as open_deal_count,
        coalesce(p.pipeline_value, 0) as pipeline_value,
        coalesce(s.open_ticket_count, 0) as open_ticket_count,
        coalesce(c.crm_contact_count, 0) as crm_contact_count,
        i.identifier_count,
    from identity as i
    left join crm_profile as c on i.customer_id = c.customer_id
    left join event_profile as e on i.customer_id = e.customer_id
    left join revenue as r on i.customer_id = r.customer_id
    left join pipeline as p on i.customer_id = p.customer_id
    left join support as s on i.customer_id = s.customer_id
)

select * from final
