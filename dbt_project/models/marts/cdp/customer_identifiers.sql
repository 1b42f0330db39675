-- Every usable identifier with its customer: the customer the registry
-- (identity.identity_registry) holds for it now. The registry keeps ids stable from run to run;
-- see docs/identity.md. Until 2026-11-24 identity.identity_resolved held these rows and this
-- table copied them (4.1M rows at a million customers, 2.5 s a run); the pre-hook drops that
-- table from a warehouse built before, so that no stale copy is left to read.
--
-- Incremental: a run writes again only the identifiers with a registry row newer than the
-- newest assigned_at here (a new customer, a merge, a split, a release) or with an
-- identity_identifier_counts row built since (first or last seen moved): delete+insert by
-- the identifier. The newest assigned_at here is a registry change made by a run that then
-- built this table, so every change of a later run is newer: its registry rows, and its
-- counts rows (stamped with the start of its dbt invocation). A change read again is written
-- again unchanged. The second pre-hook deletes the identifiers released since (their newest
-- registry row has no customer): they have no row to write.
-- The post-hook checks the rows a run writes for a repeated identifier, in place of a test of
-- the whole table, which held a dbt thread for 0.4 s of every run at a million customers
-- while customer_events waited for it.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['identifier_type', 'identifier_value'],
    on_schema_change='fail',
    pre_hook=[
        "drop table if exists {{ adapter.quote(this.database) }}.\"identity\".identity_resolved",
        "{% if is_incremental() %}
        delete from {{ this }} as kept using (
            select identifier_type, identifier_value
            from {{ ref('identity_registry') }}
            where changed_at > (select coalesce(max(assigned_at), '-infinity'::timestamptz) from {{ this }})
            group by identifier_type, identifier_value
            having arg_max_null(customer_id, changed_at) is null
        ) as released
        where kept.identifier_type = released.identifier_type
            and kept.identifier_value = released.identifier_value
        {% endif %}",
    ],
    post_hook=["{{ fail_on_repeated_keys(['identifier_type', 'identifier_value']) }}"],
) }}

-- depends_on: {{ ref('identity_identifier_counts') }}
{% if is_incremental() %}
with watermark as (
    select coalesce(max(assigned_at), '-infinity'::timestamptz) as assigned_at from {{ this }}
),

changed as (
    select identifier_type, identifier_value
    from {{ ref('identity_registry') }}
    where changed_at > (select assigned_at from watermark)
    union
    select identifier_type, identifier_value
    from {{ ref('identity_identifier_counts') }}
    where _built_at > (select assigned_at from watermark)
),

identifiers as (
    select i.*
    from {{ ref('identity_identifiers') }} as i
    semi join changed as c
        on i.identifier_type = c.identifier_type and i.identifier_value = c.identifier_value
    where i.node_id is not null
),

registry as (
    select r.*
    from {{ ref('identity_registry') }} as r
    semi join changed as c
        on r.identifier_type = c.identifier_type and r.identifier_value = c.identifier_value
),
{% else %}
with identifiers as (
    select * from {{ ref('identity_identifiers') }} where node_id is not null
),

registry as (
    select * from {{ ref('identity_registry') }}
),
{% endif %}

current_customers as (
    select identifier_type, identifier_value, customer_id, changed_at as assigned_at
    from registry
    qualify row_number() over (
        partition by identifier_type, identifier_value order by changed_at desc
    ) = 1
),

final as (
    select
        c.customer_id,
        i.identifier_type,
        i.identifier_value,
        i.first_seen_at,
        i.last_seen_at,
        c.assigned_at,
    from identifiers as i
    left join current_customers as c
        on i.identifier_type = c.identifier_type and i.identifier_value = c.identifier_value
)

select * from final
