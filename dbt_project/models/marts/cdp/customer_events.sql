-- Every deduplicated event with its customer: by userId, else anonymousId, else the email or
-- phone in its traits. When profiles merge their events are re-keyed to the surviving
-- customer_id, so a customer's journey, from the first anonymous visit on, is one query.
-- customer_id is NULL only when every identifier the message carries was held out by a rule
-- (identity.identifiers_held_out says which). A session is a customer's run of events with no
-- gap longer than vars.session_timeout_minutes. customer_assigned_at: when the identifier
-- that keys the event got its current customer (a registry change).
--
-- Incremental: a run keys only the messages staged since the newest _loaded_at here and the
-- messages naming an identifier whose customer changed (or that lost its customer) since the
-- newest customer_assigned_at here. Every customer those messages belong to now or belonged
-- to before gets its sessions computed again from the start of the session its first changed
-- event joins (sessions before are unchanged); of its kept events, only those whose session
-- changed are written again (delete+insert by message_id). The result equals a full rebuild.
-- The table is rebuilt when raw event rows were removed (macro rebuild_if_raw_events_removed).
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='message_id',
    on_schema_change='fail',
    pre_hook=[
        "{{ rebuild_if_columns_changed(added={'customer_assigned_at': 'timestamptz', '_loaded_at': 'timestamptz'}) }}",
        "{{ rebuild_if_raw_events_removed() }}",
    ],
    post_hook=["{{ fail_on_repeated_keys(['message_id']) }}"],
) }}

-- depends_on: {{ ref('identity_registry') }}
with identifiers as (
    select * from {{ ref('customer_identifiers') }}
),

{% if is_incremental() %}
-- From the registry, so that identifiers released since (held out now) count too.
changed_identifiers as (
    select identifier_type, identifier_value
    from {{ ref('identity_registry') }}
    where changed_at > (select coalesce(max(customer_assigned_at), '-infinity'::timestamptz) from {{ this }})
),

messages as (
    select *
    from {{ ref('stg_events__messages') }}
    where _loaded_at > (select coalesce(max(_loaded_at), '-infinity'::timestamptz) from {{ this }})
        or user_id in (select identifier_value from changed_identifiers where identifier_type = 'user_id')
        or anonymous_id in (select identifier_value from changed_identifiers where identifier_type = 'anonymous_id')
        or email in (select identifier_value from changed_identifiers where identifier_type = 'email')
        or phone in (select identifier_value from changed_identifiers where identifier_type = 'phone')
),
{% else %}
-- A full build reads every message twice, the narrow columns for the sessions and all of them
-- for the rows, rather than keeping every keyed row (JSON columns included) to read it back:
-- at a million customers the query took 33.5-36.9 s (66-72 s CPU) so, against 60.7-63.9 s
-- (89-120 s CPU) with DuckDB's materialized CTE; the same rows, peak RSS 9.42 against 9.67 GiB.
messages as not materialized (
    select * from {{ ref('stg_events__messages') }}
),
{% endif %}

keyed as {{ '' if is_incremental() else 'not materialized ' }}(
    select
        m.message_id,
        coalesce(u.customer_id, a.customer_id, e.customer_id, p.customer_id) as customer_id,
        case
            when u.customer_id is not null then u.assigned_at
            when a.customer_id is not null then a.assigned_at
            when e.customer_id is not null then e.assigned_at
            else p.assigned_at
        end as customer_assigned_at,
        m.message_type,
        m.event_name,
        m.page_name,
        m.event_at,
        m.user_id,
        m.anonymous_id,
        m.order_id,
        m.order_revenue,
        m.properties,
        m.traits,
        m._source_file as source_file,
        m._source_line as source_line,
        m._loaded_at,
    from messages as m
    left join identifiers as u
        on u.identifier_type = 'user_id' and u.identifier_value = m.user_id
    left join identifiers as a
        on a.identifier_type = 'anonymous_id' and a.identifier_value = m.anonymous_id
    left join identifiers as e
        on e.identifier_type = 'email' and e.identifier_value = m.email
    left join identifiers as p
        on p.identifier_type = 'phone' and p.identifier_value = m.phone
),

{% if is_incremental() %}
-- The customers whose events changed, each from the earliest event that changed: the new
-- owners of the keyed messages and their owners before.
changed_from as (
    select customer_id, min(event_at) as event_at
    from (
        select customer_id, event_at from keyed
        union all
        select old.customer_id, old.event_at
        from {{ this }} as old
        semi join keyed on old.message_id = keyed.message_id
    )
    where customer_id is not null
    group by customer_id
),

-- Their other events, as they are here (read once: DuckDB reads every column of every row
-- of this table to find them).
kept as materialized (
    select old.*
    from {{ this }} as old
    semi join changed_from as c on old.customer_id = c.customer_id
    anti join keyed on old.message_id = keyed.message_id
),

-- A customer's sessions that end before its first changed event stay as they are, and so
-- does the first event of the session of its last kept event before it: that event still
-- starts a session, as nothing before it changed. Sessions are computed again from there
-- (from the customer's first event if none is kept before the change).
last_sessions as (
    select k.customer_id, arg_max(k.session_id, k.event_at) as session_id
    from kept as k
    inner join changed_from as c on k.customer_id = c.customer_id
    where k.event_at < c.event_at
    group by k.customer_id
),

recomputed_from as (
    select c.customer_id, coalesce(min(k.event_at), '-infinity'::timestamptz) as event_at
    from changed_from as c
    left join last_sessions as l on c.customer_id = l.customer_id
    left join kept as k on l.customer_id = k.customer_id and l.session_id = k.session_id
    group by c.customer_id
),

-- The keyed events and, of the kept ones, those from where sessions are computed again
-- (kept_session_id: the session they have here; only those whose session changes are
-- written again).
events as (
    select *, null::varchar as kept_session_id from keyed
    union all by name
    select k.* exclude (session_id), k.session_id as kept_session_id
    from kept as k
    inner join recomputed_from as r on k.customer_id = r.customer_id and k.event_at >= r.event_at
),
{% else %}
events as not materialized (
    select * from keyed
),
{% endif %}

-- Sessions on the narrow columns, joined back by message_id. A session's id is made from its
-- customer and its first event's time: the time of the latest session start up to the event
-- (a running max, in the order of the starts; raw.events declares event_at NOT NULL, so no
-- start is skipped). At a million customers the query took 39.6-44.3 s (77-86 s CPU) so,
-- against 45.8-46.2 s (89-90 s CPU) with a running count of the starts and the min(event_at)
-- of each (customer, count): a third window.
session_starts as (
    select
        message_id,
        customer_id,
        event_at,
        coalesce(
            event_at - lag(event_at) over (partition by customer_id order by event_at, message_id)
                > interval '{{ var("session_timeout_minutes") }} minutes',
            true
        ) as is_session_start,
    from events
    where customer_id is not null
),

sessions as (
    select
        message_id,
        'ses_' || substr(md5(customer_id || ':' || cast(epoch_ms(
            max(case when is_session_start then event_at end) over (
                partition by customer_id order by event_at, message_id
                rows between unbounded preceding and current row
            )
        ) as varchar)), 1, 16) as session_id,
    from session_starts
),

final as (
    select
        e.message_id,
        e.customer_id,
        s.session_id,
        e.message_type,
        e.event_name,
        e.page_name,
        e.event_at,
        e.user_id,
        e.anonymous_id,
        e.order_id,
        e.order_revenue,
        e.properties,
        e.traits,
        e.source_file,
        e.source_line,
        e.customer_assigned_at,
        e._loaded_at,
    from events as e
    left join sessions as s on e.message_id = s.message_id
    {%- if is_incremental() %}
    where e.kept_session_id is null or e.kept_session_id <> s.session_id
    {%- endif %}
)

select * from final
