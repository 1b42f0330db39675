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

{%- set rules = identifier_type_rules() -%}
{%- set event_fields = [] -%}
{%- for identifier_type, rule in rules.items() -%}
{%- for field in rule.event_fields -%}
{%- do event_fields.append((identifier_type, field.split('.', 1)[0], '$.' ~ field.split('.', 1)[1])) -%}
{%- endfor -%}
{%- endfor %}
with contacts as (
    select * from {{ ref('stg_crm__contacts') }}
),

-- Only the columns read here, never materialized: the messages of a full build do not fit
-- in memory with their JSON columns at a million customers.
all_messages as not materialized (
    select
        message_id, _source_file, _source_line, event_at, _loaded_at, user_id, anonymous_id,
        previous_id, traits ->> 'email' as email, traits ->> 'phone' as phone,
        {%- if event_fields %} traits, context, properties,{% endif %}
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

-- Each record's identifiers as one list, normalized by the rule of their type (written in
-- as constants, macro normalized_as), without NULLs and without repeats (an alias whose
-- previousId is its anonymousId names it once): no grouping of all occurrences is needed.
contact_identifiers as (
    select
        'crm_contact:' || contact_id as record_key,
        'crm_contact' as record_source,
        contact_id as record_id,
        _source_file as source_file,
        _source_line as source_line,
        coalesce(created_at, _loaded_at) as seen_at,
        _loaded_at,
        list_distinct(list_filter(
            [
                {{ identifier_entry(rules, 'crm_contact_id', 'contact_id') }},
                {{ identifier_entry(rules, 'email', 'email_raw::varchar') }},
                {{ identifier_entry(rules, 'phone', 'phone_raw::varchar') }},
            ],
            lambda i: i.identifier_value is not null
        )) as identifiers,
    from contacts
),

-- An alias's previousId is usually an anonymous id; it is a user id when some message uses
-- it as one. Extra sources from the rules (event_fields: traits.x, context.x.y,
-- properties.x) are read as strings from the message's JSON.
message_identifiers as (
    select
        'event:' || m.message_id as record_key,
        'event' as record_source,
        m.message_id as record_id,
        m._source_file as source_file,
        m._source_line as source_line,
        m.event_at as seen_at,
        m._loaded_at,
        list_distinct(list_filter(
            [
                {{ identifier_entry(rules, 'user_id', 'm.user_id') }},
                {{ identifier_entry(rules, 'anonymous_id', 'm.anonymous_id') }},
                case
                    when u.user_id is not null
                    then {{ identifier_entry(rules, 'user_id', 'm.previous_id') }}
                    else {{ identifier_entry(rules, 'anonymous_id', 'm.previous_id') }}
                end,
                {{ identifier_entry(rules, 'email', 'm.email') }},
                {{ identifier_entry(rules, 'phone', 'm.phone') }},
                {%- for identifier_type, json_column, json_path in event_fields %}
                {{ identifier_entry(rules, identifier_type, "json_extract_string(m." ~ json_column ~ ", '" ~ json_path | replace("'", "''") ~ "')") }},
                {%- endfor %}
            ],
            lambda i: i.identifier_value is not null
        )) as identifiers,
    from messages as m
    left join known_user_ids as u on m.previous_id = u.user_id
),

records as (
    select * from contact_identifiers
    union all
    select * from message_identifiers
),

final as (
    select
        record_key,
        record_source,
        record_id,
        source_file,
        source_line,
        seen_at,
        unnest(identifiers, recursive := true),
        _loaded_at,
    from records
)

select
    *,
    (select any_value(rules_version) from identifier_types) as rules_version,
from final
