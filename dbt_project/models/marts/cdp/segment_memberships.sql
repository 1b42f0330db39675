-- Current members of every segment model listed in vars.segment_models. entered_at is
-- carried over from the previous build for customers who were already members.
{%- set previous = load_relation(this) %}

with members as (
    {% for segment in var('segment_models') %}
    select '{{ segment }}' as segment_name, customer_id from {{ ref(segment) }}
    {% if not loop.last %}union all{% endif %}
    {% endfor %}
),

{% if previous is not none %}
previous as (
    select segment_name, customer_id, entered_at from {{ previous }}
),
{% endif %}

final as (
    select
        m.segment_name,
        m.customer_id,
        {% if previous is not none %}coalesce(p.entered_at, current_timestamp){% else %}current_timestamp{% endif %} as entered_at,
    from members as m
    {% if previous is not none %}
    left join previous as p
        on m.segment_name = p.segment_name and m.customer_id = p.customer_id
    {% endif %}
)

select * from final
