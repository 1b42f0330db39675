-- What cdp.customers takes from a customer's events, one row per customer with events: counts,
-- sessions, carts, orders (an order sent twice counts once; NULLs without orders) and the
-- products bought. last_loaded_at and last_assigned_at (the newest _loaded_at and
-- customer_assigned_at of the customer's events) are the incremental watermarks.
--
-- The name sorts after int_purchase_propensity_models on purpose: dbt starts the models that
-- are ready at the same depth in name order, and the propensity model store (which trains
-- the model when it is due), on the longest path to cdp.customers, should not wait for this
-- one (which then runs beside it).
--
-- Incremental: a pre-hook deletes the rows of the customers whose events may have changed
-- (macro customers_changed_since_build), then every customer with events and no row
-- here is computed (again), so a customer left without events keeps none. The result equals
-- a full rebuild. Rebuilt when raw event rows were removed (cdp.customer_events is rebuilt
-- then). The post-hook checks the rows a run builds for a repeated customer: it computes
-- only customers with no row here, so the table stays one row per customer.
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    pre_hook=[
        "{{ rebuild_if_raw_events_removed('(select max(last_loaded_at) from ' ~ this ~ ')') }}",
        "{% if is_incremental() %}delete from {{ this }} where customer_id in ({{ customers_changed_since_build('last_loaded_at', 'last_assigned_at') }}){% endif %}",
    ],
    post_hook=["{{ fail_on_repeated_keys(['customer_id']) }}"],
) }}

-- depends_on: {{ ref('identity_registry') }}
with events as (
    select * from {{ ref('customer_events') }}
    where customer_id is not null
    {% if is_incremental() %}
        and customer_id not in (select customer_id from {{ this }})
    {% endif %}
),

activity as (
    select
        customer_id,
        count(*) as event_count,
        count(*) filter (where message_type in ('page', 'screen')) as page_view_count,
        count(distinct session_id) as session_count,
        max(event_at) filter (where event_name in ('Product Added', 'Checkout Started')) as last_cart_activity_at,
        max(_loaded_at) as last_loaded_at,
        max(customer_assigned_at) as last_assigned_at,
    from events
    group by customer_id
),

-- A cart is abandoned when a session adds to cart or starts checkout and completes no order.
session_carts as (
    select
        customer_id,
        session_id,
        max(event_at) filter (where event_name in ('Product Added', 'Checkout Started')) as last_cart_at,
        count(*) filter (where event_name = 'Order Completed') as order_events,
    from events
    group by customer_id, session_id
),

abandoned_carts as (
    select customer_id, max(last_cart_at) as last_cart_abandoned_at
    from session_carts
    where last_cart_at is not null and order_events = 0
    group by customer_id
),

-- One row per order id: an order sent twice (browser and server) counts once.
orders as (
    select
        customer_id,
        order_id,
        max(order_revenue) as revenue,
        min(event_at) as ordered_at,
        arg_min(properties, event_at) as properties,
    from events
    where event_name = 'Order Completed' and order_id is not null
    group by customer_id, order_id
),

order_stats as (
    select
        customer_id,
        count(*) as order_count,
        coalesce(sum(revenue), 0) as lifetime_revenue,
        min(ordered_at) as first_order_at,
        max(ordered_at) as last_order_at,
    from orders
    group by customer_id
),

products as (
    select customer_id, list(distinct product_name order by product_name) as products_bought
    from (
        select customer_id, unnest(json_extract_string(properties, '$.products[*].name')) as product_name
        from orders
    )
    where product_name is not null
    group by customer_id
),

final as (
    select
        a.customer_id,
        a.event_count,
        a.page_view_count,
        a.session_count,
        a.last_cart_activity_at,
        c.last_cart_abandoned_at,
        o.order_count,
        o.lifetime_revenue,
        o.first_order_at,
        o.last_order_at,
        p.products_bought,
        a.last_loaded_at,
        a.last_assigned_at,
    from activity as a
    left join abandoned_carts as c on a.customer_id = c.customer_id
    left join order_stats as o on a.customer_id = o.customer_id
    left join products as p on a.customer_id = p.customer_id
)

select * from final
