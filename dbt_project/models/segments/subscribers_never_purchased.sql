-- Customers we may email (an address and no opt-out: see the consent columns of cdp.customers)
-- who have never completed an order.
with customers as (
    select * from {{ ref('customers') }}
),

final as (
    select
        customer_id,
        email,
        first_name,
        last_name,
        lifecycle_stage,
        email_consent,
        first_seen_at,
    from customers
    where is_email_contactable
        and order_count = 0
)

select * from final
