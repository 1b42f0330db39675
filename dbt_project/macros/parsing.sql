{# CRM exports write dates in several formats; all are read as UTC. NULL when none fits. #}
{% macro parse_crm_timestamp(value) -%}
coalesce(
    try_cast({{ value }} as timestamptz),
    try_strptime({{ value }}, ['%Y-%m-%d %H:%M', '%m/%d/%Y %H:%M:%S', '%m/%d/%Y %H:%M', '%m/%d/%Y'])::timestamptz
)
{%- endmacro %}

{% macro parse_boolean(value) -%}
case
    when lower(trim({{ value }})) in ('true', 'yes', 'y', '1') then true
    when lower(trim({{ value }})) in ('false', 'no', 'n', '0') then false
end
{%- endmacro %}

{# The reference time of time windows and day counts (segments, cdp.customers): var segments_as_of,
   else the newest event. #}
{% macro segments_as_of() -%}
{%- if var('segments_as_of', none) -%}
cast('{{ var("segments_as_of") }}' as timestamptz)
{%- else -%}
(select max(event_at) from {{ ref('stg_events__messages') }})
{%- endif -%}
{%- endmacro %}

{# "101; 102,103" -> ['101', '102', '103']: CRM association columns hold several ids. #}
{% macro split_ids(value) -%}
list_filter(
    regexp_split_to_array(regexp_replace(coalesce({{ value }}, ''), '\s', '', 'g'), '[;,]'),
    lambda x: x <> ''
)
{%- endmacro %}
