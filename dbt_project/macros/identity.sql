{# The event records whose identifier pairs identity_pairs collects again in an incremental
   run: the messages staged after `watermark` (new ones, and new copies of known message ids),
   and the aliases whose previousId such a message uses as a userId (identity_occurrences
   retypes that previousId as a user id). The same records identity_occurrences re-reads,
   or more when the watermark is older. #}
{% macro identity_pairs_changed_events(watermark) -%}
select 'event:' || message_id
from {{ ref('stg_events__messages') }}
where _loaded_at > {{ watermark }}
    or previous_id in (
        select user_id from {{ ref('stg_events__messages') }} where _loaded_at > {{ watermark }}
    )
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
