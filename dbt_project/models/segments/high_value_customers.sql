-- Customers whose lifetime revenue reaches var high_value_min_revenue.
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
        lifetime_revenue,
        order_count,
        last_order_at,
    from customers
    where lifetime_revenue >= {{ var('high_value_min_revenue') }}
)

select * from final
