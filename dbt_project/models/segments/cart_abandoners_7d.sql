-- Customers who added to cart or started checkout in the 7 days before the reference time
-- (macro segments_as_of) and have not completed an order since.
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
        last_cart_activity_at,
        last_order_at,
    from customers
    where last_cart_activity_at > {{ segments_as_of() }} - interval 7 day
        and last_cart_activity_at <= {{ segments_as_of() }}
        and (last_order_at is null or last_order_at < last_cart_activity_at)
)

select * from final
