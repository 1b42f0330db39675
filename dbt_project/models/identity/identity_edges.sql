-- Edges between usable identifiers: every record links each identifier it names to the
-- record's anchor (its highest-priority identifier). One row per linked pair, with the rank
-- of the weaker end (identifier_types.priority), when the link was first seen and the first
-- record that made it (for explanations).
with occurrences as (
    select * from {{ ref('identity_occurrences') }}
),

identifiers as (
    select * from {{ ref('identity_identifiers') }} where node_id is not null
),

record_nodes as (
    select
        o.record_key,
        o.seen_at,
        i.node_id,
        i.priority,
        first_value(i.node_id) over (
            partition by o.record_key order by i.priority, i.identifier_value
        ) as anchor_node_id,
    from occurrences as o
    inner join identifiers as i
        on o.identifier_type = i.identifier_type and o.identifier_value = i.identifier_value
),

final as (
    select
        least(node_id, anchor_node_id) as src_node_id,
        greatest(node_id, anchor_node_id) as dst_node_id,
        max(priority) as edge_rank,
        min(seen_at) as first_seen_at,
        count(*) as record_count,
        arg_min(record_key, seen_at) as first_record_key,
    from record_nodes
    where node_id <> anchor_node_id
    group by 1, 2
)

select * from final
