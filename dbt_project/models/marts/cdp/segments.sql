-- The segment catalog: every segment model with its description, owner and size.
{%- set catalog = {} %}
{%- if execute %}
    {%- for node in graph.nodes.values() if node.resource_type == 'model' and node.name in var('segment_models') %}
        {%- do catalog.update({node.name: node}) %}
    {%- endfor %}
{%- endif %}

with memberships as (
    select * from {{ ref('segment_memberships') }}
),

catalog as (
    {% for segment in var('segment_models') %}
    {%- set node = catalog.get(segment) %}
    select
        '{{ segment }}' as segment_name,
        {{ dbt.string_literal(node.description if node else '') }} as description,
        {{ dbt.string_literal((node.config.meta or {}).get('owner', '') if node else '') }} as owner
    {% if not loop.last %}union all{% endif %}
    {% endfor %}
),

final as (
    select
        c.segment_name,
        c.description,
        c.owner,
        count(m.customer_id) as member_count,
        current_timestamp as built_at,
    from catalog as c
    left join memberships as m on c.segment_name = m.segment_name
    group by c.segment_name, c.description, c.owner
)

select * from final
