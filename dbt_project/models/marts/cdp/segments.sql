-- The segment catalog: every segment model with its description, owner, definition (sql, or
-- declarative with its conditions), size, and who entered and exited in the latest build.
{%- set catalog = {} %}
{%- if execute %}
    {%- for node in graph.nodes.values() if node.resource_type == 'model' and node.name in var('segment_models') %}
        {%- do catalog.update({node.name: node}) %}
    {%- endfor %}
{%- endif %}

with memberships as (
    select * from {{ ref('segment_memberships') }}
),

changes as (
    select * from {{ ref('segment_membership_changes') }}
),

catalog as (
    {%- for segment in var('segment_models') %}
    {%- set node = catalog.get(segment) %}
    {%- set meta = (node.config.meta if node else {}) or {} %}
    select
        '{{ segment }}' as segment_name,
        {{ sql_string(node.description if node else '') }} as description,
        {{ sql_string(meta.get('owner', '')) }} as owner,
        '{{ 'declarative' if 'conditions' in meta else 'sql' }}' as definition,
        {% if 'conditions' in meta %}{{ sql_string(meta.conditions | tojson) }}{% else %}null{% endif %} as conditions,
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
),

sizes as (
    select segment_name, count(*) as member_count
    from memberships
    group by segment_name
),

latest_changes as (
    select
        segment_name,
        count(*) filter (where change = 'entered') as entered_count,
        count(*) filter (where change = 'exited') as exited_count,
    from changes
    where changed_at = {{ build_started_at() }}
    group by segment_name
),

final as (
    select
        c.segment_name,
        c.description,
        c.owner,
        c.definition,
        c.conditions,
        coalesce(s.member_count, 0) as member_count,
        coalesce(l.entered_count, 0) as entered_count,
        coalesce(l.exited_count, 0) as exited_count,
        {{ build_started_at() }} as built_at,
    from catalog as c
    left join sizes as s on c.segment_name = s.segment_name
    left join latest_changes as l on c.segment_name = l.segment_name
)

select * from final
