{#
  Identifier normalization. Each macro returns a SQL expression that is NULL when the value
  is not a usable identifier. Which normalizer a type uses, and the phone default country
  code, come from dbt_project/identity_rules.yml (tables identity_identifier_types and
  identity_rules). The macros use no adapter calls, so orchestration/identifiers.py renders
  the same macros to normalize what a user types (`cdp customer " Ana@X.com "`).
#}

{# Leading and trailing ASCII whitespace (space, tab, line feed, form feed, carriage return:
   the regex class \s of DuckDB's RE2) removed; other characters, such as a no-break space,
   are kept. trim with the characters, not a regex: at a million customers, four ids of 19M
   messages were stripped in 2.6-2.7 s (3.1-3.2 s CPU) against 4.3-5.3 s (5.6-6.3 s CPU). #}
{% macro strip_whitespace(value) -%}
trim(cast({{ value }} as varchar), chr(9) || chr(10) || chr(12) || chr(13) || chr(32))
{%- endmacro %}

{% macro normalize_id(value) -%}
nullif({{ strip_whitespace(value) }}, '')
{%- endmacro %}

{% macro normalize_lowercase_id(value) -%}
lower({{ normalize_id(value) }})
{%- endmacro %}

{% macro normalize_email(value) -%}
{%- set cleaned = "lower(" ~ strip_whitespace(value) ~ ")" -%}
case when regexp_full_match({{ cleaned }}, '[^@\s]+@[^@\s]+\.[^@\s]+') then {{ cleaned }} end
{%- endmacro %}

{# A SHA-256 digest as 64 hex digits (a hashed email from an ad platform), lowercased. #}
{% macro normalize_sha256(value) -%}
{%- set cleaned = "lower(" ~ strip_whitespace(value) ~ ")" -%}
case when regexp_full_match({{ cleaned }}, '[0-9a-f]{64}') then {{ cleaned }} end
{%- endmacro %}

{#
  Phone numbers to E.164: "+" and the digits when the value starts with + or 00; otherwise a
  national number in the default country (a leading trunk 0 is dropped; for country code 1 an
  11-digit number starting with 1 already carries it). NULL unless the result has 8 to 15
  digits (country code 1: exactly 10 more). `default_country_code` is a SQL expression; by
  default the rules file's default_country_code (from the identity_rules table).
#}
{% macro normalize_phone(value, default_country_code=none) -%}
{%- set cc = default_country_code if default_country_code is not none else "(select default_country_code from " ~ ref('identity_rules') ~ ")" -%}
{%- set raw = strip_whitespace(value) -%}
{%- set digits = "regexp_replace(" ~ raw ~ ", '[^0-9]', '', 'g')" -%}
nullif(regexp_extract(
    (case
        when {{ raw }} like '+%' then '+' || {{ digits }}
        when {{ digits }} like '00%' then '+' || substr({{ digits }}, 3)
        when {{ cc }} = '1' and length({{ digits }}) = 11 and {{ digits }} like '1%' then '+' || {{ digits }}
        when {{ digits }} like '0%' then '+' || {{ cc }} || substr({{ digits }}, 2)
        else '+' || {{ cc }} || {{ digits }}
    end),
    '^([+](1[0-9]{10}|[2-9][0-9]{7,14}))$', 1
), '')
{%- endmacro %}

{#
  The normalizer chosen by a SQL expression (a column of identity_identifier_types, or a
  literal): id, lowercase_id, email, phone or sha256. NULL for any other name.
#}
{% macro normalize_identifier(value, normalizer, default_country_code) -%}
case {{ normalizer }}
    when 'id' then {{ normalize_id(value) }}
    when 'lowercase_id' then {{ normalize_lowercase_id(value) }}
    when 'email' then {{ normalize_email(value) }}
    when 'phone' then {{ normalize_phone(value, default_country_code) }}
    when 'sha256' then {{ normalize_sha256(value) }}
end
{%- endmacro %}
