-- Every usable identifier with its customer. A customer's id is derived from its earliest
-- seen identifier, so it stays the same from run to run while that identifier does, and on
-- a merge the customer whose history starts earlier keeps its id.
with identifiers as (
    select * from {{ ref('identity_identifiers') }} where node_id is not null
),

components as (
    select * from {{ ref('identity_components') }}
),

assigned as (
    select
        i.identifier_type,
        i.identifier_value,
        i.priority,
        i.first_seen_at,
        i.last_seen_at,
        i.occurrence_count,
        c.component_id,
        c.refused_detail,
    from identifiers as i
    inner join components as c on i.node_id = c.node_id
),

component_anchors as (
    select
        component_id,
        'cus_' || substr(md5(identifier_type || ':' || identifier_value), 1, 16) as customer_id,
    from assigned
    qualify row_number() over (
        partition by component_id order by first_seen_at, priority, identifier_value
    ) = 1
),

final as (
    select
        a.customer_id,
        s.identifier_type,
        s.identifier_value,
        s.first_seen_at,
        s.last_seen_at,
        s.occurrence_count,
        s.refused_detail,
    from assigned as s
    inner join component_anchors as a on s.component_id = a.component_id
)

select * from final
