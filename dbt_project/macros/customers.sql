{#
  The golden record's configuration (vars in dbt_project.yml, docs/customers.md), read and
  checked in one place. Errors name the file and key and say what to do.
#}

{# The profile fields each source can provide (the columns of its records in
   int_customer_profile_values). #}
{% macro customer_profile_source_fields() -%}
{%- do return({
    'crm': ['first_name', 'last_name', 'company_name', 'lifecycle_stage', 'email', 'phone'],
    'identify': ['first_name', 'last_name', 'company_name', 'email', 'phone'],
}) -%}
{%- endmacro %}

{# The profile fields of cdp.customers, in column order. #}
{% macro customer_profile_fields() -%}
{%- do return(['first_name', 'last_name', 'email', 'phone', 'company_name', 'lifecycle_stage']) -%}
{%- endmacro %}

{# vars.customer_field_sources as (field, source, rank) rows, checked. #}
{% macro customer_field_source_ranks() -%}
{%- set available = customer_profile_source_fields() -%}
{%- set config = var('customer_field_sources') -%}
{%- set where = 'dbt_project.yml, vars.customer_field_sources' -%}
{%- if config is not mapping or not config -%}
    {{ exceptions.raise_compiler_error(where ~ ': expected a mapping of profile field to a list of sources, e.g. first_name: [crm, identify]') }}
{%- endif -%}
{%- set fields = customer_profile_fields() -%}
{%- set rows = [] -%}
{%- for field, sources in config.items() -%}
    {%- if field not in fields -%}
        {{ exceptions.raise_compiler_error(where ~ '.' ~ field ~ ": '" ~ field ~ "' is not a profile field; use one of " ~ fields | join(', ')) }}
    {%- endif -%}
    {%- if sources is string or sources is not iterable or not sources -%}
        {{ exceptions.raise_compiler_error(where ~ '.' ~ field ~ ': expected a non-empty list of sources in priority order, e.g. [crm, identify]') }}
    {%- endif -%}
    {%- for source in sources -%}
        {%- if source not in available -%}
            {{ exceptions.raise_compiler_error(where ~ '.' ~ field ~ ": '" ~ source ~ "' is not a source; use " ~ available.keys() | list | join(' or ')) }}
        {%- endif -%}
        {%- if field not in available[source] -%}
            {{ exceptions.raise_compiler_error(where ~ '.' ~ field ~ ": the source '" ~ source ~ "' has no " ~ field ~ "; remove it from the list") }}
        {%- endif -%}
        {%- do rows.append("('" ~ field ~ "', '" ~ source ~ "', " ~ loop.index ~ ")") -%}
    {%- endfor -%}
{%- endfor -%}
select * from (values {{ rows | join(', ') }}) as ranks(field, source, source_rank)
{%- endmacro %}

{# SQL string literal: a hash of the ranks vars.customer_field_sources gives (as SQL);
   int_customer_profile_values is rebuilt when it changes. #}
{% macro customer_field_sources_version() -%}
'{{ local_md5(customer_field_source_ranks()) }}'
{%- endmacro %}

{# vars.consent_signals, checked: {channel: {opt_in_events, opt_out_events, unsubscribed_trait,
   contactable_without_signal}}. #}
{% macro consent_channels() -%}
{%- set config = var('consent_signals') -%}
{%- set where = 'dbt_project.yml, vars.consent_signals' -%}
{%- set known = ['opt_in_events', 'opt_out_events', 'unsubscribed_trait', 'contactable_without_signal'] -%}
{%- if config is not mapping or (config.keys() | list | sort) != ['email', 'sms'] -%}
    {{ exceptions.raise_compiler_error(where ~ ': expected exactly the channels email and sms, each with ' ~ known | join(', ')) }}
{%- endif -%}
{%- set channels = {} -%}
{%- for channel, rules in config.items() -%}
    {%- if rules is not mapping -%}
        {{ exceptions.raise_compiler_error(where ~ '.' ~ channel ~ ': expected a mapping with ' ~ known | join(', ')) }}
    {%- endif -%}
    {%- for key in rules if key not in known -%}
        {{ exceptions.raise_compiler_error(where ~ '.' ~ channel ~ '.' ~ key ~ ': unknown key; use ' ~ known | join(', ')) }}
    {%- endfor -%}
    {%- set opt_in = rules.get('opt_in_events') or [] -%}
    {%- set opt_out = rules.get('opt_out_events') or [] -%}
    {%- for key, events in [('opt_in_events', opt_in), ('opt_out_events', opt_out)] -%}
        {%- if events is string or events is not iterable -%}
            {{ exceptions.raise_compiler_error(where ~ '.' ~ channel ~ '.' ~ key ~ ': expected a list of event names, e.g. [SMS Subscribed]') }}
        {%- endif -%}
    {%- endfor -%}
    {%- for event in opt_in if event in opt_out -%}
        {{ exceptions.raise_compiler_error(where ~ '.' ~ channel ~ ": '" ~ event ~ "' is in both opt_in_events and opt_out_events; keep it in one") }}
    {%- endfor -%}
    {%- set contactable = rules.get('contactable_without_signal', false) -%}
    {%- if contactable not in [true, false] -%}
        {{ exceptions.raise_compiler_error(where ~ '.' ~ channel ~ '.contactable_without_signal: expected true or false') }}
    {%- endif -%}
    {%- do channels.update({channel: {
        'opt_in_events': opt_in,
        'opt_out_events': opt_out,
        'unsubscribed_trait': rules.get('unsubscribed_trait'),
        'contactable_without_signal': contactable,
    }}) -%}
{%- endfor -%}
{%- do return(channels) -%}
{%- endmacro %}

{# A SQL string literal, quotes doubled. #}
{% macro sql_string(value) -%}
'{{ (value | string).replace("'", "''") }}'
{%- endmacro %}

{# ('a', 'b') for an IN list; a list that matches nothing when empty. #}
{% macro sql_in_list(values) -%}
{%- if values -%}
({% for value in values %}{{ sql_string(value) }}{% if not loop.last %}, {% endif %}{% endfor %})
{%- else -%}
(select null where false)
{%- endif -%}
{%- endmacro %}


{# The customers whose rows in the calling model (int_shopping_activity,
   int_customer_profile_values) may have changed since it was built: the customers of events
   (of message_type, when given) loaded since the newest value of its column loaded_column,
   and the customers an identifier belongs to now or belonged to before, of registry changes
   since the newest value of its column assigned_column. An event or record moves to another
   customer, and an email or phone becomes usable or not, only when an identifier changes
   customer, so these include the old and new customer of every event cdp.customer_events
   re-keyed, and every customer it re-sessioned. #}
{% macro customers_changed_since_build(loaded_column, assigned_column, message_type=none) -%}
select customer_id
from {{ ref('customer_events') }}
where customer_id is not null
    {%- if message_type %}
    and message_type = {{ sql_string(message_type) }}
    {%- endif %}
    and _loaded_at > (select coalesce(max({{ loaded_column }}), '-infinity'::timestamptz) from {{ this }})
union
select unnest([customer_id, previous_customer_id])
from {{ ref('identity_registry') }}
where changed_at > (select coalesce(max({{ assigned_column }}), '-infinity'::timestamptz) from {{ this }})
{%- endmacro %}
