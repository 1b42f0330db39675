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

{# Pre-hook of the incremental event models: when raw.events lost rows since the model last
   read it (an events file was replaced or became a copy of another), empty the model so that
   this run rebuilds it from all of raw.events. The loader records every such file in
   raw.loaded_files with its status and time. watermark: SQL for the newest raw _loaded_at the
   model has read. #}
{% macro rebuild_if_raw_events_removed(watermark=none) -%}
{%- if is_incremental() -%}
delete from {{ this }}
where exists (
    select 1
    from raw.loaded_files  {#- written with raw.events by the same Dagster asset #}
    where file_kind = 'events'
        and status in ('replaced', 'duplicate')
        and loaded_at > {{ watermark or '(select max(_loaded_at) from ' ~ this ~ ')' }}
)
{%- endif -%}
{%- endmacro %}

{# SQL condition: a contacts file was loaded after the newest _loaded_at of the calling
   model's CRM rows (those whose column holds crm_value; every row without a column); any
   contacts file when it has none. #}
{% macro contacts_loaded_since_build(column=none, crm_value=none) -%}
exists (
    select 1
    from raw.loaded_files  {#- written with raw.crm_contacts by the same Dagster asset #}
    where file_kind = 'contacts'
        and loaded_at > (
            select coalesce(max(_loaded_at), '-infinity'::timestamptz)
            from {{ this }}
            {%- if column %}
            where {{ column }} = {{ sql_string(crm_value) }}
            {%- endif %}
        )
)
{%- endmacro %}

{# First pre-hook of an incremental model: a table built by an earlier version of the model
   lacks columns the incremental logic reads (added: name -> DuckDB type), or has columns the
   model no longer selects (removed: names; incremental models fail on a schema change).
   Empty the table and bring its columns in line, so that this run rebuilds it instead of
   failing. #}
{% macro rebuild_if_columns_changed(added={}, removed=[]) -%}
{%- if is_incremental() -%}
{%- set present = adapter.get_columns_in_relation(this) | map(attribute='name') | map('lower') | list -%}
{%- set missing = [] -%}
{%- for name in added if name not in present -%}{%- do missing.append(name) -%}{%- endfor -%}
{%- set left_over = [] -%}
{%- for name in removed if name in present -%}{%- do left_over.append(name) -%}{%- endfor -%}
{%- if missing or left_over -%}
delete from {{ this }};
{%- for name in missing %}
alter table {{ this }} add column {{ name }} {{ added[name] }};
{%- endfor %}
{%- for name in left_over %}
alter table {{ this }} drop column {{ name }};
{%- endfor %}
{%- endif -%}
{%- endif -%}
{%- endmacro %}
