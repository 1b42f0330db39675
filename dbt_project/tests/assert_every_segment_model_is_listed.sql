-- Fails for a model in models/segments/ that vars.segment_models does not list (it would be
-- missing from cdp.segments and cdp.segment_memberships).
{%- set missing = [] %}
{%- if execute %}
    {%- for node in graph.nodes.values() if node.resource_type == 'model' and node.fqn[1] == 'segments' %}
        {%- if node.name not in var('segment_models') %}{% do missing.append(node.name) %}{% endif %}
    {%- endfor %}
{%- endif %}
{%- if missing %}
{%- for name in missing %}
select '{{ name }}' as unlisted_segment_model{% if not loop.last %} union all{% endif %}
{%- endfor %}
{%- else %}
select null as unlisted_segment_model where false
{%- endif %}
