-- The current members of every segment model listed in vars.segment_models.
with final as (
    {%- for segment in var('segment_models') %}
    select '{{ segment }}' as segment_name, customer_id from {{ ref(segment) }}
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
)

select * from final
