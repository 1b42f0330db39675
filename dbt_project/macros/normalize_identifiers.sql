{#
  Identifier normalization. Each macro returns a SQL expression that is NULL when the value
  is not a usable identifier. They use no adapter calls, so orchestration/identifiers.py can
  render the same macros to normalize what a user types (`cdp customer " Ana@X.com "`).
#}

{# Leading and trailing whitespace of any kind (spaces, tabs, newlines) removed. #}
{% macro strip_whitespace(value) -%}
regexp_replace(cast({{ value }} as varchar), '^\s+|\s+$', '', 'g')
{%- endmacro %}

{% macro normalize_id(value) -%}
nullif({{ strip_whitespace(value) }}, '')
{%- endmacro %}

{% macro normalize_email(value) -%}
{%- set cleaned = "lower(" ~ strip_whitespace(value) ~ ")" -%}
case when regexp_full_match({{ cleaned }}, '[^@\s]+@[^@\s]+\.[^@\s]+') then {{ cleaned }} end
{%- endmacro %}

{#
  Phone numbers to E.164: "+" and the digits when the value starts with + or 00; otherwise a
  national number in the default country (a leading trunk 0 is dropped; for country code 1 an
  11-digit number starting with 1 already carries it). NULL unless the result has 8 to 15
  digits (country code 1: exactly 10 more).
#}
{% macro normalize_phone(value, default_country_code=none) -%}
{%- set cc = (default_country_code if default_country_code is not none else var('identity_default_country_code', '1')) | string -%}
{%- set raw = strip_whitespace(value) -%}
{%- set digits = "regexp_replace(" ~ raw ~ ", '[^0-9]', '', 'g')" -%}
{%- set e164 -%}
(case
    when {{ raw }} like '+%' then '+' || {{ digits }}
    when {{ digits }} like '00%' then '+' || substr({{ digits }}, 3)
    {%- if cc == '1' %}
    when length({{ digits }}) = 11 and {{ digits }} like '1%' then '+' || {{ digits }}
    {%- endif %}
    when {{ digits }} like '0%' then '+{{ cc }}' || substr({{ digits }}, 2)
    else '+{{ cc }}' || {{ digits }}
end)
{%- endset -%}
nullif(regexp_extract({{ e164 }}, '^([+](1[0-9]{10}|[2-9][0-9]{7,14}))$', 1), '')
{%- endmacro %}
