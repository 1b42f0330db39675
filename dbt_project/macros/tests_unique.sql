{# Uniqueness: dbt tests, and a guard for incremental models. Rows are grouped by a hash of
   the key first (a 64-bit integer groups faster than strings: three times faster for three
   columns at 34M rows; 1.9-3.1 s against 3.8-3.9 s for one message id column at 20M rows);
   only the rows of a repeated hash, a real repeat or a rare collision, are then grouped by
   the key itself. #}
{% macro repeated_keys(model, key, where='true') %}
with repeated_hashes as (
    select hash({{ key }}) as row_hash
    from {{ model }}
    where {{ where }}
    group by row_hash
    having count(*) > 1
)

select {{ key }}, count(*) as n_records
from {{ model }}
where {{ where }} and hash({{ key }}) in (select row_hash from repeated_hashes)
group by {{ key }}
having count(*) > 1
{% endmacro %}

{# Generic test: no two rows share the same values in all of `columns`. #}
{% test unique_combination(model, columns) %}
{{ repeated_keys(model, columns | join(', ')) }}
{% endtest %}

{# dbt's built-in `unique` test (NULLs are not compared), on DuckDB. #}
{% macro duckdb__test_unique(model, column_name) %}
{{ repeated_keys(model, column_name, where=column_name ~ ' is not null') }}
{% endmacro %}

{# Post-hook of an incremental model that must hold one row per key (`columns`): fails the
   model when the rows this run built repeat a key, and the model's transaction rolls back,
   so the table keeps its previous rows. It checks the batch only (dbt's temporary table of
   the new rows; the whole table when the model was built from scratch), which is enough for
   a model whose new rows never share a key with the rows it keeps: delete+insert with a
   unique_key inside `columns`, or an append whose pre-hook deleted the rows of every key it
   computes again. By induction the table never holds a repeated key, for the cost of the
   batch instead of a uniqueness test on the whole table every run. `where` (SQL) limits the
   check to the rows that must be unique, e.g. `is_survivor`. #}
{% macro fail_on_repeated_keys(columns, where=none) -%}
{%- if execute -%}
{%- set found = batch_tables(newest_only=true) -%}
{%- set rows = found[0] if found else this -%}
{%- set key = columns | join(', ') -%}
select error(
    '{{ this.identifier }}: the rows this run built repeat ' || count(*) || ' key(s) of ('
    || '{{ key }}){{ (" among the rows where " ~ where) | replace("\'", "\'\'") if where }}, so none were written (the table keeps its previous rows). The model''s '
    || 'SQL produced them: report it with the model''s name.'
)
from ({{ repeated_keys(rows, key, where=where or 'true') }})
having count(*) > 0
{%- endif -%}
{%- endmacro %}

{# The tables dbt-duckdb wrote this model's batch to, named <model>__dbt_tmp<time>, fully
   qualified, newest first (only the newest with newest_only): a temporary table of this
   connection for a SQL model, a table of the Python session's default schema for a Python
   model (which dbt-duckdb does not drop: macro drop_python_batch_tables). #}
{% macro batch_tables(newest_only=false) -%}
{%- set found = run_query(
    "select database_name, schema_name, table_name from duckdb_tables() "
    ~ "where database_name in ('temp', '" ~ this.database ~ "') and starts_with(table_name, '"
    ~ this.identifier ~ "__dbt_tmp') order by table_name desc" ~ (" limit 1" if newest_only else "")
) -%}
{%- set names = [] -%}
{%- for row in found.rows -%}
{%- do names.append(adapter.quote(row[0]) ~ '.' ~ adapter.quote(row[1]) ~ '.' ~ adapter.quote(row[2])) -%}
{%- endfor -%}
{{- return(names) -}}
{%- endmacro %}

{# Last post-hook of an incremental Python model: drop the tables its batches were written to.
   dbt-duckdb writes a Python model's batch to a table of the session's default schema, not a
   temporary one, and leaves it there: one more table every run otherwise. #}
{% macro drop_python_batch_tables() -%}
{%- if execute -%}
{%- for name in batch_tables() %}
drop table {{ name }};
{%- endfor %}
{%- endif -%}
{%- endmacro %}
