{#
  Declarative segments (docs/segments.md): a segment model whose .sql file is the one line

      {{ declarative_segment() }}

  is defined by `conditions` in the `meta` of its YAML entry:

      conditions:
        all:                                  # every item holds (or any: at least one)
          - {trait: order_count, op: "=", value: 0}
          - {event: Product Viewed, within_days: 14, op: ">=", value: 3}
          - any:
              - {trait: email_consent, op: is_null}
              - {trait: last_seen_at, op: within_last_days, value: 30}

  A trait is a column of cdp.customers. An event counts a customer's events of that name (a
  track event name, or page, screen, identify, ...) in the window that ends at the reference
  time (macro segments_as_of); without within_days it counts all of them. op defaults to >=
  and value to 1, so {event: Order Completed, within_days: 30} means "ordered in 30 days".
  Errors name the YAML file, the model and the key, and say what to write instead.
#}

{% macro declarative_segment_ops() -%}
{%- do return({
    'compare': ['=', '!=', '<', '<=', '>', '>='],
    'list': ['in', 'not_in'],
    'null': ['is_null', 'is_not_null'],
    'days': ['within_last_days', 'not_within_last_days'],
}) -%}
{%- endmacro %}

{% macro declarative_segment() -%}
{%- set customers = ref('customers') -%}
{%- set events = ref('customer_events') -%}
{%- if not execute -%}
{#- Parsing: name every relation the segment may read, so dbt knows its dependencies. #}
select customer_id, {{ segments_as_of() }} as as_of from {{ customers }}
{%- else -%}
{%- set meta = model.config.meta or {} -%}
{%- set yaml_file = (model.patch_path or model.original_file_path).split('://')[-1] -%}
{%- set where = yaml_file ~ ", model " ~ model.name ~ ", key meta.conditions" -%}
{%- if 'conditions' not in meta -%}
    {{ exceptions.raise_compiler_error(where ~ ": missing. A declarative segment (a model file that is {{ declarative_segment() }}) needs conditions in the meta of its YAML entry, e.g. conditions: {all: [{trait: order_count, op: '>', value: 0}]}") }}
{%- endif -%}
{%- set columns = {} -%}
{%- for column in adapter.get_columns_in_relation(customers) -%}
    {%- do columns.update({column.name | lower: column}) -%}
{%- endfor -%}
{%- set found = {'traits': [], 'events': []} -%}
{%- set condition = declarative_condition(meta.conditions, where, columns, found) -%}
{%- set base = ['customer_id', 'email', 'phone', 'first_name', 'last_name'] -%}
with customers as (
    select * from {{ customers }}
),

reference as (
    select {{ segments_as_of() }} as as_of
),
{%- if found.events %}

{#- When every count has a window, only the events of the widest one are read: a customer
    with none there has no row here, which the final step reads as zero, as it would a row of
    zeros. At a million customers engaged_browsers_14d took 0.5-0.6 s so in incremental runs,
    against 1.3 s. #}
{%- set windows = found.events | map(attribute='within_days') | list %}

events as (
    select e.customer_id, coalesce(e.event_name, e.message_type) as event_name, e.event_at
    from {{ events }} as e
    cross join reference as r
    where e.customer_id is not null
        and e.event_at <= r.as_of
        {%- if none not in windows %}
        and e.event_at > r.as_of - interval {{ windows | max }} day
        {%- endif %}
        and coalesce(e.event_name, e.message_type) in {{ sql_in_list(found.events | map(attribute='event') | unique | list) }}
),

event_counts as (
    select
        e.customer_id,
        {%- for leaf in found.events %}
        count(*) filter (
            where e.event_name = {{ sql_string(leaf.event) }}
            {%- if leaf.within_days is not none %} and e.event_at > r.as_of - interval {{ leaf.within_days }} day{% endif %}
        ) as {{ leaf.column }},
        {%- endfor %}
    from events as e
    cross join reference as r
    group by e.customer_id
),
{%- endif %}

final as (
    select
        {%- for column in base %}
        c.{{ column }},
        {%- endfor %}
        {%- for trait in found.traits if trait not in base %}
        c.{{ trait }},
        {%- endfor %}
        {%- for leaf in found.events %}
        coalesce(ec.{{ leaf.column }}, 0) as {{ leaf.column }},
        {%- endfor %}
    from customers as c
    cross join reference as r
    {%- if found.events %}
    left join event_counts as ec on c.customer_id = ec.customer_id
    {%- endif %}
    where {{ condition }}
)

select * from final
{%- endif -%}
{%- endmacro %}

{# The SQL of one condition (a group or a leaf), checked; collects traits and event counts. #}
{% macro declarative_condition(node, where, columns, found) -%}
{%- if node is not mapping -%}
    {{ exceptions.raise_compiler_error(where ~ ": expected a condition (a mapping with all, any, trait or event), got " ~ node | tojson) }}
{%- endif -%}
{%- set kinds = [] -%}
{%- for key in ['all', 'any', 'trait', 'event'] if key in node -%}{%- do kinds.append(key) -%}{%- endfor -%}
{%- if kinds | length != 1 -%}
    {{ exceptions.raise_compiler_error(where ~ ": a condition has exactly one of all, any, trait or event; found " ~ (kinds | join(', ') if kinds else 'none') ~ " in " ~ node | tojson) }}
{%- endif -%}
{%- set kind = kinds[0] -%}
{%- if kind in ['all', 'any'] -%}
    {%- set items = node[kind] -%}
    {%- if node | length != 1 -%}
        {{ exceptions.raise_compiler_error(where ~ ": a group has only the key " ~ kind ~ "; found " ~ node.keys() | list | join(', ')) }}
    {%- endif -%}
    {%- if items is string or items is mapping or items is not iterable or not items -%}
        {{ exceptions.raise_compiler_error(where ~ "." ~ kind ~ ": expected a non-empty list of conditions") }}
    {%- endif -%}
    {%- set parts = [] -%}
    {%- for item in items -%}
        {%- do parts.append(declarative_condition(item, where ~ "." ~ kind ~ "[" ~ loop.index0 ~ "]", columns, found)) -%}
    {%- endfor -%}
    {%- do return("(" ~ parts | join(" and " if kind == 'all' else " or ") ~ ")") -%}
{%- elif kind == 'trait' -%}
    {%- do return(declarative_trait_condition(node, where, columns, found)) -%}
{%- else -%}
    {%- do return(declarative_event_condition(node, where, found)) -%}
{%- endif -%}
{%- endmacro %}

{% macro declarative_trait_condition(node, where, columns, found) -%}
{%- set ops = declarative_segment_ops() -%}
{%- for key in node if key not in ['trait', 'op', 'value'] -%}
    {{ exceptions.raise_compiler_error(where ~ "." ~ key ~ ": unknown key in a trait condition; use trait, op and value") }}
{%- endfor -%}
{%- set trait = node.trait -%}
{%- if trait is not string or (trait | lower) not in columns -%}
    {{ exceptions.raise_compiler_error(where ~ ".trait: '" ~ trait ~ "' is not a trait; traits are the columns of cdp.customers: " ~ columns.keys() | list | join(', ')) }}
{%- endif -%}
{%- set trait = trait | lower -%}
{%- set column = columns[trait] -%}
{%- set op = node.get('op') -%}
{%- set all_ops = ops.compare + ops.list + ops.null + ops.days -%}
{%- if op not in all_ops -%}
    {{ exceptions.raise_compiler_error(where ~ ".op: '" ~ op ~ "' is not an operator for trait " ~ trait ~ "; use one of " ~ all_ops | join(', ')) }}
{%- endif -%}
{%- set value = node.get('value') -%}
{%- set expression = "c." ~ trait -%}
{%- if op in ops.null -%}
    {%- if 'value' in node -%}
        {{ exceptions.raise_compiler_error(where ~ ".value: " ~ op ~ " takes no value; remove it") }}
    {%- endif -%}
    {%- set sql = expression ~ (" is null" if op == 'is_null' else " is not null") -%}
{%- elif op in ops.days -%}
    {%- if value is not number or value is sameas true or value is sameas false or value < 1 or value != (value | int) -%}
        {{ exceptions.raise_compiler_error(where ~ ".value: " ~ op ~ " needs a whole number of days (1 or more), got " ~ value | tojson) }}
    {%- endif -%}
    {%- if 'timestamp' not in column.data_type | lower and 'date' not in column.data_type | lower -%}
        {{ exceptions.raise_compiler_error(where ~ ".op: " ~ op ~ " needs a date or timestamp trait; " ~ trait ~ " is " ~ column.data_type) }}
    {%- endif -%}
    {%- set since = "r.as_of - interval " ~ (value | int) ~ " day" -%}
    {%- if op == 'within_last_days' -%}
        {%- set sql = "(" ~ expression ~ " > " ~ since ~ " and " ~ expression ~ " <= r.as_of)" -%}
    {%- else -%}
        {%- set sql = "(" ~ expression ~ " is null or " ~ expression ~ " <= " ~ since ~ ")" -%}
    {%- endif -%}
{%- elif op in ops.list -%}
    {%- if value is string or value is mapping or value is not iterable or not value -%}
        {{ exceptions.raise_compiler_error(where ~ ".value: " ~ op ~ " needs a non-empty list, e.g. [customer, evangelist]") }}
    {%- endif -%}
    {%- set literals = [] -%}
    {%- for item in value -%}{%- do literals.append(declarative_literal(item, where ~ ".value[" ~ loop.index0 ~ "]", trait, column)) -%}{%- endfor -%}
    {%- if op == 'in' -%}
        {%- set sql = expression ~ " in (" ~ literals | join(', ') ~ ")" -%}
    {%- else -%}
        {%- set sql = "(" ~ expression ~ " is null or " ~ expression ~ " not in (" ~ literals | join(', ') ~ "))" -%}
    {%- endif -%}
{%- else -%}
    {%- if 'value' not in node -%}
        {{ exceptions.raise_compiler_error(where ~ ".value: missing; " ~ op ~ " compares trait " ~ trait ~ " with a value, e.g. value: 3") }}
    {%- endif -%}
    {%- set literal = declarative_literal(value, where ~ ".value", trait, column) -%}
    {%- set sql = expression ~ (" is distinct from " if op == '!=' else " " ~ op ~ " ") ~ literal -%}
{%- endif -%}
{%- if trait not in found.traits -%}{%- do found.traits.append(trait) -%}{%- endif -%}
{%- do return(sql) -%}
{%- endmacro %}

{% macro declarative_event_condition(node, where, found) -%}
{%- set ops = declarative_segment_ops() -%}
{%- for key in node if key not in ['event', 'within_days', 'op', 'value'] -%}
    {{ exceptions.raise_compiler_error(where ~ "." ~ key ~ ": unknown key in an event condition; use event, within_days, op and value") }}
{%- endfor -%}
{%- set event = node.event -%}
{%- if event is not string or not event | trim -%}
    {{ exceptions.raise_compiler_error(where ~ ".event: expected an event name, e.g. Product Viewed (or page, screen, identify)") }}
{%- endif -%}
{%- set days = node.get('within_days') -%}
{%- if days is not none and (days is not number or days is sameas true or days is sameas false or days < 1 or days != (days | int)) -%}
    {{ exceptions.raise_compiler_error(where ~ ".within_days: expected a whole number of days (1 or more), got " ~ days | tojson) }}
{%- endif -%}
{%- set op = node.get('op', '>=') -%}
{%- if op not in ops.compare -%}
    {{ exceptions.raise_compiler_error(where ~ ".op: '" ~ op ~ "' is not an operator for an event count; use one of " ~ ops.compare | join(', ')) }}
{%- endif -%}
{%- set value = node.get('value', 1) -%}
{%- if value is not number or value is sameas true or value is sameas false or value < 0 or value != (value | int) -%}
    {{ exceptions.raise_compiler_error(where ~ ".value: an event count compares with a whole number (0 or more), got " ~ value | tojson) }}
{%- endif -%}
{%- set slug = modules.re.sub('[^a-z0-9]+', '_', event | lower).strip('_') -%}
{%- set column = slug ~ "_count" ~ ("_" ~ (days | int) ~ "d" if days is not none else "") -%}
{%- set leaf = {'event': event, 'within_days': (days | int if days is not none else none), 'column': column} -%}
{%- if leaf not in found.events -%}{%- do found.events.append(leaf) -%}{%- endif -%}
{%- do return("coalesce(ec." ~ column ~ ", 0) " ~ ("<>" if op == '!=' else op) ~ " " ~ (value | int)) -%}
{%- endmacro %}

{# A YAML value as a SQL literal, checked against the trait's type. #}
{% macro declarative_literal(value, where, trait, column) -%}
{%- if value is sameas true or value is sameas false -%}
    {%- do return('true' if value else 'false') -%}
{%- elif value is number -%}
    {%- if column.is_string() -%}
        {{ exceptions.raise_compiler_error(where ~ ": trait " ~ trait ~ " holds text; write the value in quotes, e.g. '" ~ value ~ "'") }}
    {%- endif -%}
    {%- do return(value | string) -%}
{%- elif value is string -%}
    {%- if column.is_number() -%}
        {{ exceptions.raise_compiler_error(where ~ ": trait " ~ trait ~ " is a number; '" ~ value ~ "' is not (write it without quotes)") }}
    {%- endif -%}
    {%- do return(sql_string(value)) -%}
{%- else -%}
    {{ exceptions.raise_compiler_error(where ~ ": expected a number, text or true/false, got " ~ value | tojson) }}
{%- endif -%}
{%- endmacro %}

{# The start of this dbt invocation, UTC: every row a build appends to a history carries it. #}
{% macro build_started_at() -%}
cast('{{ run_started_at.isoformat() }}' as timestamptz)
{%- endmacro %}
