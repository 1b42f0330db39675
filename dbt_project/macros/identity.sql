{# The event records whose identifier pairs identity_pairs collects again in an incremental
   run: the messages staged after `watermark` (new ones, and new copies of known message ids),
   and the aliases whose previousId such a message uses as a userId (identity_occurrences
   retypes that previousId as a user id). The same records identity_occurrences re-reads,
   or more when the watermark is older. #}
{% macro identity_pairs_changed_events(watermark) -%}
select 'event:' || message_id
from {{ ref('stg_events__messages') }}
where _loaded_at > {{ watermark }}
union all
select 'event:' || message_id
from {{ ref('stg_events__messages') }}
where previous_id is not null
    and (_loaded_at > {{ watermark }}) is not true
    and previous_id in (
        select user_id from {{ ref('stg_events__messages') }} where _loaded_at > {{ watermark }}
    )
{%- endmacro %}

{# In an incremental run of identity_occurrences or identity_pairs (the calling model): true
   when a CRM contacts file was loaded (new, changed or replaced) after its newest contact
   record, so the contacts are collected again; otherwise their rows stay as they are. #}
{# The newest event record of the calling model (identity_occurrences or identity_pairs),
   NULL when it has none: an incremental run re-reads the messages staged after it. #}
{% macro identity_event_watermark() -%}
(select max(_loaded_at) from {{ this }} where record_source = 'event')
{%- endmacro %}

{# First pre-hooks of identity_occurrences and identity_pairs (the calling model), after the
   rebuild checks: delete the contact rows when the contacts are collected again, and every
   row of older collecting rules (rules_version). #}
{% macro identity_delete_stale_rows() -%}
{%- if is_incremental() -%}
delete from {{ this }}
where (record_source = 'crm_contact' and {{ identity_contacts_changed() }})
    or rules_version <> (select rules_version from {{ ref('identity_identifier_types') }} limit 1)
{%- endif -%}
{%- endmacro %}

{# Pre-hook of a model that adds up, incrementally, the rows of `source` built since its own
   newest _built_at (identity_distinct_pairs, identity_identifier_counts; identity_identifiers
   keeps each identifier's occurrence count): it empties the model when `source` lost rows
   since (a record collected again, contacts re-read, a rebuild), because then the rows of
   `source` built up to that _built_at no longer add up to `count_column` here, and the run
   rebuilds the model from every row. #}
{% macro rebuild_if_rows_removed_from(source, count_column) -%}
{%- if is_incremental() -%}
delete from {{ this }}
where (select count(*) from {{ source }} where _built_at <= (select max(_built_at) from {{ this }}))
    <> (select sum({{ count_column }}) from {{ this }})
{%- endif -%}
{%- endmacro %}

{% macro identity_contacts_changed() -%}
{{ contacts_loaded_since_build('record_source', 'crm_contact') }}
{%- endmacro %}

{# The node_id of a usable identifier (identity_identifiers, identity_edges): DuckDB's 64-bit
   hash of (type, value), shifted to fit a BIGINT. identity_edges computes it from a pair
   instead of joining the identifiers. identity_identifiers keeps its rows from run to run,
   and is rebuilt when DuckDB's hash changes (a DuckDB upgrade: macro
   identity_identifiers_rules_fingerprint); so are identity_edges and identity_components,
   emptied when identity_identifiers was (macro identity_empty_if_identifiers_rebuilt, and its
   Python form in identity_components); the other models that hold node ids are rebuilt every
   run. #}
{% macro identity_node_id(identifier_type, identifier_value) -%}
(hash({{ identifier_type }}, {{ identifier_value }}) >> 1)::bigint
{%- endmacro %}

{# What an identity_identifiers row was classified by (SQL, one string): the identifier types
   (priority, limits, people-level, super-node thresholds...), the blocklist, and DuckDB's
   hash (the node ids). The model is rebuilt when it changes. #}
{% macro identity_identifiers_rules_fingerprint() -%}
(select md5(concat_ws('#',
    (select string_agg(t::varchar, ';' order by t.identifier_type) from {{ ref('identity_identifier_types') }} as t),
    (select string_agg(b::varchar, ';' order by b.identifier_type, b.match_type, b.pattern) from {{ ref('identity_blocklist') }} as b),
    hash('identity_node_id')::varchar
)))
{%- endmacro %}

{# The regex entries of identity_blocklist (built earlier in the same run), each with its
   identifier type, pattern and reason as SQL string literals. None while parsing. #}
{% macro blocklist_regex_entries() -%}
{%- set entries = [] -%}
{%- if execute -%}
{%- set found = run_query("select identifier_type, pattern, reason from " ~ ref('identity_blocklist') ~ " where match_type = 'regex' order by identifier_type, pattern") -%}
{%- for row in found.rows -%}
{%- do entries.append({
    'type_literal': "'" ~ row[0] | replace("'", "''") ~ "'",
    'pattern_literal': "'" ~ row[1] | replace("'", "''") ~ "'",
    'reason_literal': "'" ~ row[2] | replace("'", "''") ~ "'",
}) -%}
{%- endfor -%}
{%- endif -%}
{{- return(entries) -}}
{%- endmacro %}

{# The identifier types of the rules (identity_identifier_types, built earlier in the same
   run): type -> {normalizer, default_country_code, event_fields}. Empty while parsing. #}
{% macro identifier_type_rules() -%}
{%- set rules = {} -%}
{%- if execute -%}
{%- set found = run_query("select identifier_type, normalizer, default_country_code, to_json(coalesce(event_fields, []))::varchar from " ~ ref('identity_identifier_types') ~ " order by identifier_type") -%}
{%- for row in found.rows -%}
{%- do rules.update({row[0]: {'normalizer': row[1], 'default_country_code': row[2], 'event_fields': fromjson(row[3])}}) -%}
{%- endfor -%}
{%- endif -%}
{{- return(rules) -}}
{%- endmacro %}

{# `value` (SQL) normalized by the rule of `identifier_type`, the normalizer written in as a
   constant; NULL when the rules have no such type (it is not collected). #}
{% macro normalized_as(rules, identifier_type, value) -%}
{%- set rule = rules.get(identifier_type) -%}
{%- if rule is none -%}
null
{%- elif rule.normalizer == 'id' -%}
{{ normalize_id(value) }}
{%- elif rule.normalizer == 'lowercase_id' -%}
{{ normalize_lowercase_id(value) }}
{%- elif rule.normalizer == 'email' -%}
{{ normalize_email(value) }}
{%- elif rule.normalizer == 'sha256' -%}
{{ normalize_sha256(value) }}
{%- elif rule.normalizer == 'phone' -%}
{{ normalize_phone(value, "'" ~ (rule.default_country_code | replace("'", "''")) ~ "'") }}
{%- else -%}
null
{%- endif -%}
{%- endmacro %}

{# One element of a record's identifier list: {identifier_type, identifier_value}. #}
{% macro identifier_entry(rules, identifier_type, value) -%}
{'identifier_type': '{{ identifier_type | replace("'", "''") }}', 'identifier_value': {{ normalized_as(rules, identifier_type, value) }}}
{%- endmacro %}

{# The CTEs up to `records`: one row per record (the CRM contacts and the messages read)
   with its identifiers as one list, normalized by the rule of their type (written in as
   constants, macro normalized_as), without NULLs and without repeats (an alias whose
   previousId is its anonymousId names it once). identity_occurrences unnests the lists and
   identity_pairs pairs their elements, so neither groups or joins all occurrences.
   A full build reads every contact and message; an incremental run of the calling model
   reads the contacts only when a contacts file was loaded since (macro
   identity_contacts_changed), and only the messages staged after its newest event record,
   plus the aliases whose previousId such a message uses as a userId (that previousId
   becomes a user id). With materialize_records, `records` is a materialized CTE: at a
   million customers identity_pairs' full build took 25-27 s so, against 40-44 s streamed.
   identity_occurrences streams: built side by side in dbt as in a full run, the two models
   took 64.5-70.3 s with pairs' records materialized, 72.3-75.3 s with both (the same
   peak memory). #}
{% macro identity_record_lists(materialize_records=false) -%}
{%- set watermark = "coalesce(" ~ identity_event_watermark() ~ ", '-infinity'::timestamptz)" if is_incremental() else none -%}
{%- set rules = identifier_type_rules() -%}
{%- set event_fields = [] -%}
{%- for identifier_type, rule in rules.items() -%}
{%- for field in rule.event_fields -%}
{%- do event_fields.append((identifier_type, field.split('.', 1)[0], '$.' ~ field.split('.', 1)[1])) -%}
{%- endfor -%}
{%- endfor -%}
{%- set json_roots = event_fields | map(attribute=1) | unique | sort | list -%}
{#- A message's identifier sources but previousId (a user_id or an anonymous_id): (type, SQL). -#}
{%- set message_sources = [('user_id', 'm.user_id'), ('anonymous_id', 'm.anonymous_id'), ('email', 'm.email'), ('phone', 'm.phone')] -%}
{%- for identifier_type, json_column, json_path in event_fields -%}
{%- do message_sources.append((identifier_type, "json_extract_string(m." ~ json_column ~ ", '" ~ json_path | replace("'", "''") ~ "')")) -%}
{%- endfor -%}
{%- set source_types = message_sources | map(attribute=0) | list -%}
contacts as (
    select * from {{ ref('stg_crm__contacts') }}
    {%- if is_incremental() %}
    where {{ identity_contacts_changed() }}
    {%- endif %}
),

-- Only the columns read here, never materialized: the messages of a full build do not fit
-- in memory with their JSON columns at a million customers. A message's context is not
-- staged: rules that read context. fields get it from its raw row (same file and line).
all_messages as not materialized (
    select
        s.message_id, s._source_file, s._source_line, s.event_at, s._loaded_at, s.user_id,
        s.anonymous_id, s.previous_id, s.traits ->> 'email' as email, s.traits ->> 'phone' as phone,
        {%- for root in json_roots %} {{ 'r' if root == 'context' else 's' }}.{{ root }},{% endfor %}
    from {{ ref('stg_events__messages') }} as s
    {%- if 'context' in json_roots %}
    inner join {{ source('events', 'events') }} as r
        on r._source_file = s._source_file and r._source_line = s._source_line
    {%- endif %}
),

{% if watermark is not none %}
new_messages as (
    select message_id, user_id
    from all_messages
    where _loaded_at > {{ watermark }}
),

-- Two branches, not one OR: the first one's filter skips the row groups loaded before the
-- watermark, and the second reads their other columns only where previous_id is set (the
-- aliases). With one OR of two subqueries every staged message was read, JSON included: at a
-- million customers, 1.1 s of identity_occurrences' query with nothing new, against 0.2 s.
messages as (
    select *
    from all_messages
    where _loaded_at > {{ watermark }}
    union all
    select *
    from all_messages
    where previous_id is not null
        and (_loaded_at > {{ watermark }}) is not true
        and previous_id in (select user_id from new_messages)
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

contact_identifiers as (
    select
        'crm_contact:' || contact_id as record_key,
        'crm_contact' as record_source,
        contact_id as record_id,
        _source_file as source_file,
        _source_line as source_line,
        coalesce(created_at, _loaded_at) as seen_at,
        _loaded_at,
        list_filter(
            [
                {{ identifier_entry(rules, 'crm_contact_id', 'contact_id') }},
                {{ identifier_entry(rules, 'email', 'email_raw::varchar') }},
                {{ identifier_entry(rules, 'phone', 'phone_raw::varchar') }},
            ],
            lambda i: i.identifier_value is not null
        ) as identifiers,  -- three types: never a repeat
    from contacts
),

-- An alias's previousId is usually an anonymous id; it is a user id when some message uses
-- it as one. Extra sources from the rules (event_fields: traits.x, context.x.y,
-- properties.x) are read as strings from the message's JSON.
message_identifier_lists as (
    select
        'event:' || m.message_id as record_key,
        'event' as record_source,
        m.message_id as record_id,
        m._source_file as source_file,
        m._source_line as source_line,
        m.event_at as seen_at,
        m._loaded_at,
        m.previous_id,
        list_filter(
            [
                case
                    when u.user_id is not null
                    then {{ identifier_entry(rules, 'user_id', 'm.previous_id') }}
                    else {{ identifier_entry(rules, 'anonymous_id', 'm.previous_id') }}
                end,
                {%- for identifier_type, value in message_sources %}
                {{ identifier_entry(rules, identifier_type, value) }},
                {%- endfor %}
            ],
            lambda i: i.identifier_value is not null
        ) as identifiers,
    from messages as m
    left join known_user_ids as u on m.previous_id = u.user_id
),

-- A list names an identifier once. Its sources other than previousId are of distinct types,
-- unless the rules read a type from several sources, so only an alias (previousId set) can
-- name one twice, and only its list is made distinct: at a million customers the lists of
-- every message took 10.7 s (21.3 s CPU) made distinct and 4.6 s (9.2 s CPU) not.
message_identifiers as (
    select
        * exclude (previous_id, identifiers),
        {%- if source_types | length == source_types | unique | list | length %}
        case when previous_id is null then identifiers else list_distinct(identifiers) end
        {%- else %}
        list_distinct(identifiers)
        {%- endif %} as identifiers,
    from message_identifier_lists
),

records as {{ 'materialized ' if materialize_records else '' }}(
    select * from contact_identifiers
    union all
    select * from message_identifiers
)
{%- endmacro %}

{# Pre-hook of identity_edges (identity_components does the same in Python): empty the
   calling model when identity_identifiers was emptied and built again since its
   newest _built_at (every identifiers row is newer): records were collected again (a pair
   may be gone) or the rules changed (never_link, limits, node ids), so the run builds every
   row again. #}
{% macro identity_empty_if_identifiers_rebuilt() -%}
{%- if is_incremental() -%}
delete from {{ this }}
where (select min(_built_at) from {{ ref('identity_identifiers') }})
    > (select max(_built_at) from {{ this }})
{%- endif -%}
{%- endmacro %}

{# Post-hook of identity_edges and identity_components: in an incremental run, delete the rows
   that name an identifier held out now (identity_identifiers without a node_id) in one of
   `columns`: one held out since it was linked keeps no link and no component. At most a few
   thousand identifiers, matched by their would-be node id. #}
{% macro identity_delete_held_out_nodes(columns) -%}
{%- if is_incremental() -%}
delete from {{ this }}
where {% for column in columns %}{{ column }} in (
        select {{ identity_node_id('identifier_type', 'identifier_value') }}
        from {{ ref('identity_identifiers') }} where node_id is null
    ){% if not loop.last %}
    or {% endif %}{% endfor %}
{%- endif -%}
{%- endmacro %}
