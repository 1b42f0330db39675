-- Customers who ordered at least twice but not in the 30 days before the reference time
-- (macro segments_as_of): the win-back audience.
with customers as (
    select * from {{ ref('customers') }}
),

final as (
    select
        customer_id,
        email,
        phone,
        first_name,
        last_name,
        order_count,
        lifetime_revenue,
        last_order_at,
        days_since_last_order,
    from customers
    where order_count >= 2
        and days_since_last_order >= 30
)

select * from final
