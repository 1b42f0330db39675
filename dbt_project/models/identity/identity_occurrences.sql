-- Every identifier named by every record (a CRM contact or an event message), normalized by
-- the rules of its type (identity_identifier_types), with where the record came from. A
-- type missing from the rules is not collected; a value that does not normalize is dropped.
-- The records that name two or more identifiers make the edges.
--
-- Incremental: CRM contacts are collected again on every run (the pre-hook removes their
-- rows); of the events, only the messages staged since the newest event here, plus the
-- aliases whose previousId a new message now uses as a userId (it becomes a user id). The
-- table is rebuilt when raw event rows were removed (macro rebuild_if_raw_events_removed) or
-- when the rules that collect identifiers changed (column rules_version).
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='record_key',
    on_schema_change='fail',
    pre_hook=[
        "{{ rebuild_if_columns_missing({'_loaded_at': 'timestamptz', 'rules_version': 'varchar'}) }}",
        "{{ rebuild_if_raw_events_removed(\"(select max(_loaded_at) from \" ~ this ~ \" where record_source = 'event')\") }}",
        "{% if is_incremental() %}delete from {{ this }} where record_source = 'crm_contact' or rules_version <> (select rules_version from {{ ref('identity_identifier_types') }} limit 1){% endif %}",
        "{% if is_incremental() %}delete from {{ this }} where record_source = 'event' and record_id in (select message_id from {{ ref('stg_events__messages') }} where _loaded_at > (select max(_loaded_at) from {{ this }} where record_source = 'event')){% endif %}",
    ],
) }}

with contacts as (
    select * from {{ ref('stg_crm__contacts') }}
),

-- Only the columns read here, never materialized: the messages of a full build do not fit
-- in memory with their JSON columns at a million customers.
all_messages as not materialized (
    select
        message_id, _source_file, _source_line, event_at, _loaded_at, user_id, anonymous_id,
        previous_id, traits ->> 'email' as email, traits ->> 'phone' as phone,
    from {{ ref('stg_events__messages') }}
),

identifier_types as (
    select * from {{ ref('identity_identifier_types') }}
),

{% if is_incremental() %}
new_messages as (
    select message_id, user_id
    from all_messages
    where _loaded_at > (
        select coalesce(max(_loaded_at), '-infinity'::timestamptz)
        from {{ this }}
        where record_source = 'event'
    )
),

messages as (
    select *
    from all_messages
    where message_id in (select message_id from new_messages)
        or previous_id in (select user_id from new_messages)
),
{% else %}
messages as (
    select * from all_messages
),
{% endif %}

-- The previousIds of these messages that some message uses as a userId.
known_user_ids as (
    select distinct user_id
    from {{ ref('stg_events__messages') }}
    where user_id in (select previous_id from messages)
),

event_fields as (
    select
        identifier_type,
        split_part(field, '.', 1) as json_column,
        '$.' || substr(field, strpos(field, '.') + 1) as json_path,
    from (select identifier_type, unnest(event_fields) as field from identifier_types)
),

contact_values as (
    unpivot (
        select
            'crm_contact:' || contact_id as record_key,
            'crm_contact' as record_source,
            contact_id as record_id,
            _source_file as source_file,
            _source_line as source_line,
            coalesce(created_at, _loaded_at) as seen_at,
            _loaded_at,
            contact_id as crm_contact_id,
            email_raw::varchar as email,
            phone_raw::varchar as phone,
        from contacts
    )
    on crm_contact_id, email, phone
    into name identifier_type value raw_value
),

message_values as (
    unpivot (
        select
            'event:' || message_id as record_key,
            'event' as record_source,
            message_id as record_id,
            _source_file as source_file,
            _source_line as source_line,
            event_at as seen_at,
            _loaded_at,
            user_id,
            anonymous_id,
            previous_id,
            email,
            phone,
        from messages
    )
    on user_id, anonymous_id, previous_id, email, phone
    into name identifier_type value raw_value
),

-- An alias's previousId is usually an anonymous id; it is a user id when some message uses
-- it as one.
message_values_typed as (
    select
        m.* exclude (identifier_type),
        case
            when m.identifier_type <> 'previous_id' then m.identifier_type
            when u.user_id is not null then 'user_id'
            else 'anonymous_id'
        end as identifier_type,
    from message_values as m
    left join known_user_ids as u
        on m.identifier_type = 'previous_id' and m.raw_value = u.user_id
),

-- Extra sources from the rules (event_fields: traits.x, context.x.y, properties.x).
event_field_values as (
    select
        'event:' || m.message_id as record_key,
        'event' as record_source,
        m.message_id as record_id,
        m._source_file as source_file,
        m._source_line as source_line,
        m.event_at as seen_at,
        m._loaded_at,
        f.identifier_type,
        json_extract_string(
            case f.json_column
                when 'traits' then m.traits
                when 'context' then m.context
                when 'properties' then m.properties
            end,
            f.json_path
        ) as raw_value,
    from {{ ref('stg_events__messages') }} as m
    cross join event_fields as f
    {% if is_incremental() %}
    where m.message_id in (select message_id from messages)
    {% endif %}
),

all_values as (
    select record_key, record_source, record_id, source_file, source_line, seen_at, _loaded_at, identifier_type, raw_value
    from contact_values
    union all
    select record_key, record_source, record_id, source_file, source_line, seen_at, _loaded_at, identifier_type, raw_value
    from message_values_typed
    {% if rules_have_event_fields() %}
    union all
    select record_key, record_source, record_id, source_file, source_line, seen_at, _loaded_at, identifier_type, raw_value
    from event_field_values
    where raw_value is not null
    {% endif %}
),

normalized as (
    select
        v.record_key,
        v.record_source,
        v.record_id,
        v.source_file,
        v.source_line,
        v.seen_at,
        v.identifier_type,
        {{ normalize_identifier('v.raw_value', 't.normalizer', 't.default_country_code') }} as identifier_value,
        v._loaded_at,
    from all_values as v
    inner join identifier_types as t on v.identifier_type = t.identifier_type
),

-- An identifier a record names twice (an alias whose previousId is its anonymousId) once.
-- The other columns belong to the record; grouped by the key alone, large builds can spill.
final as (
    select
        record_key,
        any_value(record_source) as record_source,
        any_value(record_id) as record_id,
        any_value(source_file) as source_file,
        any_value(source_line) as source_line,
        any_value(seen_at) as seen_at,
        identifier_type,
        identifier_value,
        any_value(_loaded_at) as _loaded_at,
    from normalized
    where identifier_value is not null
    group by record_key, identifier_type, identifier_value
)

select
    *,
    (select any_value(rules_version) from identifier_types) as rules_version,
from final

