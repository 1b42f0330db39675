{# Generic test: no two rows share the same values in all of `columns`. Rows are grouped by a
   hash of the columns first (a 64-bit integer groups three times faster than the strings at
   34M rows); only the rows of a repeated hash, a real repeat or a rare collision, are then
   grouped by the columns themselves. #}
{% test unique_combination(model, columns) %}
{%- set key = columns | join(', ') %}
with repeated_hashes as (
    select hash({{ key }}) as row_hash
    from {{ model }}
    group by row_hash
    having count(*) > 1
)

select {{ key }}, count(*) as n
from {{ model }}
where hash({{ key }}) in (select row_hash from repeated_hashes)
group by {{ key }}
having count(*) > 1
{% endtest %}
