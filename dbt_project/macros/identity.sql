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
