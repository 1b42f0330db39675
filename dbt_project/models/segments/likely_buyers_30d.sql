-- Customers the purchase propensity model rates likely to order within its horizon (30 days by
-- default): purchase_propensity of at least var likely_buyer_min_propensity.
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
        purchase_propensity,
        order_count,
        last_order_at,
        is_email_contactable,
    from customers
    where purchase_propensity >= {{ var('likely_buyer_min_propensity') }}
)

select * from final
