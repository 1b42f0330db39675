-- One row per message: a messageId seen more than once (SDK retries, overlapping exports)
-- keeps its first occurrence (by source file name, then line). The message's context (device,
-- page, campaign: most of an event's bytes) stays in raw.events, found by _source_file and
-- _source_line; no model reads it unless an identity rule names a context. field. Copying it
-- here made a full build at a million customers take 49-58 s instead of 34-37 s.
--
-- Incremental: a run reads only the raw rows loaded since the newest _loaded_at here and
-- keeps the first of each message id among them. A new row whose id is already here is kept
-- only when it comes before the row here (delete+insert by message_id then replaces that
-- row), so the table equals a full rebuild; only the ids and positions of the rows here are
-- read, not their JSON columns. When raw rows were removed since (a changed file replaced
-- its earlier rows), the pre-hook empties the table and this run rebuilds it from all of
-- raw.events (macro rebuild_if_raw_events_removed).
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='message_id',
    on_schema_change='fail',
    pre_hook=[
        "{{ rebuild_if_columns_changed(added={'_loaded_at': 'timestamptz'}, removed=['context']) }}",
        "{{ rebuild_if_raw_events_removed() }}",
    ],
    post_hook=["{{ fail_on_repeated_keys(['message_id']) }}"],
) }}

with new_rows as not materialized (
    select *
    from {{ source('events', 'events') }}
    {% if is_incremental() %}
    where _loaded_at > (select coalesce(max(_loaded_at), '-infinity'::timestamptz) from {{ this }})
    {% endif %}
),

-- The later copies (by source file name, then line) of the message ids read more than once.
-- Few ids repeat, so only their rows are ranked. A full build at a million customers took
-- 85-91 s and ~10 GB with a window over every row (it sorted the JSON columns of all
-- messages), 60-76 s ranking every row's id, file and line alone, and 51-55 s and ~5.4 GB
-- like this. new_rows is read three times and never materialized, for the same reason.
later_copies as (
    select message_id, _source_file, _source_line
    from new_rows
    where message_id in (
        select message_id from new_rows group by message_id having count(*) > 1
    )
    qualify row_number() over (
        partition by message_id order by _source_file, _source_line
    ) > 1
),

deduplicated as (
    select *
    from new_rows as n
    anti join later_copies as l
        on n.message_id = l.message_id
        and n._source_file = l._source_file
        and n._source_line = l._source_line
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
        _loaded_at,
    from deduplicated
)

{% if is_incremental() %}
select *
from final
where not exists (
    select 1
    from {{ this }} as old
    where old.message_id = final.message_id
        and (
            old._source_file < final._source_file
            or (old._source_file = final._source_file and old._source_line < final._source_line)
        )
)
{% else %}
select * from final
{% endif %}
