-- One row per message: a messageId seen more than once (SDK retries, overlapping exports)
-- keeps its first occurrence.
with source as (
    select * from {{ source('events', 'events') }}
),

deduplicated as (
    select *
    from source
    qualify row_number() over (
        partition by message_id order by _source_file, _source_line
    ) = 1
),

final as (
    select
        message_id,
        lower(type) as message_type,
        nullif(trim(event), '') as event_name,
        nullif(trim(name), '') as page_name,
        {{ normalize_id('user_id') }} as user_id,
        {{ normalize_id('anonymous_id') }} as anonymous_id,
        {{ normalize_id('previous_id') }} as previous_id,
        event_at,
        received_at,
        traits,
        properties,
        context,
        {{ normalize_email("traits ->> 'email'") }} as email,
        {{ normalize_phone("traits ->> 'phone'") }} as phone,
        nullif(trim(coalesce(traits ->> 'firstName', traits ->> 'first_name')), '') as first_name,
        nullif(trim(coalesce(traits ->> 'lastName', traits ->> 'last_name')), '') as last_name,
        nullif(trim(properties ->> 'order_id'), '') as order_id,
        case
            when event = 'Order Completed'
            then try_cast(coalesce(properties ->> 'revenue', properties ->> 'total') as double)
        end as order_revenue,
        _source_file,
        _source_line,
    from deduplicated
)

select * from final
