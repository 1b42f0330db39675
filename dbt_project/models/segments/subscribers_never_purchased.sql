-- Customers we may email (an address, not unsubscribed) who have never completed an order.
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
        first_seen_at,
    from customers
    where email is not null
        and not is_unsubscribed_from_email
        and order_count = 0
)

select * from final
