-- Every value a source holds for a profile field of a customer, ranked by the survivorship
-- rules of vars.customer_field_sources: the first source in the field's list that has a value
-- wins, and within it the most recent value. is_survivor marks the value cdp.customers shows.
-- Emails and phones count only when identity resolution assigned them to the customer (junk
-- values such as test@test.com are held out there). _loaded_at and _assigned_at: when the
-- record was loaded, and when the identifier that links it to the customer got that customer
-- (the incremental watermarks).
--
-- Incremental, per customer: a pre-hook deletes the rows of the customers whose values may
-- have changed (macro customers_changed_since_build: identify messages loaded since, and
-- the customers before and after every registry change since), then every customer with no
-- row here gets its values computed (again). Rebuilt when a contacts file was loaded since the
-- newest CRM row here, when vars.customer_field_sources changed (sources_version) or when raw
-- event rows were removed. The result equals a full rebuild.
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    pre_hook=[
        "{{ rebuild_if_columns_changed(added={'_loaded_at': 'timestamptz', '_assigned_at': 'timestamptz', 'sources_version': 'varchar'}) }}",
        "{{ rebuild_if_raw_events_removed() }}",
        "{% if is_incremental() %}delete from {{ this }} where sources_version <> {{ customer_field_sources_version() }} or {{ contacts_loaded_since_build('source', 'crm') }}{% endif %}",
        "{% if is_incremental() %}delete from {{ this }} where customer_id in ({{ customers_changed_since_build('_loaded_at', '_assigned_at', message_type='identify') }}){% endif %}",
    ],
    post_hook=[
        "{{ fail_on_repeated_keys(['customer_id', 'field', 'source', 'record_id']) }}",
        "{{ fail_on_repeated_keys(['customer_id', 'field'], where='is_survivor') }}",
    ],
) }}

-- depends_on: {{ ref('identity_registry') }}
-- Not materialized: read twice (for the CRM contact ids, and to match emails and phones),
-- DuckDB would otherwise copy all 4.1M identifiers first (0.35 s of CPU at a million
-- customers).
with identifiers as not materialized (
    select * from {{ ref('customer_identifiers') }}
),

contacts as (
    select * from {{ ref('stg_crm__contacts') }}
),

identify_messages as (
    select * from {{ ref('stg_events__messages') }} where message_type = 'identify'
),

{% if is_incremental() %}
-- The customers with values here (those the pre-hook did not delete) are left as they are.
kept_customers as (
    select distinct customer_id from {{ this }}
),
{% endif %}

events as (
    select e.message_id, e.customer_id, e.customer_assigned_at
    from {{ ref('customer_events') }} as e
    {% if is_incremental() %}
    anti join kept_customers as k on e.customer_id = k.customer_id
    {% endif %}
    where e.customer_id is not null and e.message_type = 'identify'
),

source_ranks as (
    {{ customer_field_source_ranks() }}
),

crm_records as (
    select
        i.customer_id,
        c.contact_id as record_id,
        coalesce(c.last_activity_at, c.created_at) as observed_at,
        c.first_name,
        c.last_name,
        c.company_name,
        c.lifecycle_stage,
        c.email,
        c.phone,
        c._loaded_at,
        i.assigned_at as _assigned_at,
    from contacts as c
    inner join identifiers as i
        on i.identifier_type = 'crm_contact_id' and i.identifier_value = c.contact_id
    {% if is_incremental() %}
    anti join kept_customers as k on i.customer_id = k.customer_id
    {% endif %}
),

identify_records as (
    select
        e.customer_id,
        m.message_id as record_id,
        m.event_at as observed_at,
        m.first_name,
        m.last_name,
        coalesce(
            nullif(trim(m.traits ->> '$.company.name'), ''),
            case when json_type(m.traits -> 'company') = 'VARCHAR' then nullif(trim(m.traits ->> 'company'), '') end
        ) as company_name,
        m.email,
        m.phone,
        m._loaded_at,
        e.customer_assigned_at as _assigned_at,
    from identify_messages as m
    inner join events as e on m.message_id = e.message_id
),

candidates as (
    {%- for source, fields in customer_profile_source_fields().items() %}
    {%- set outer_loop = loop %}
    {%- for field in fields %}
    select
        customer_id,
        '{{ field }}' as field,
        '{{ source }}' as source,
        record_id,
        cast({{ field }} as varchar) as value,
        observed_at,
        _loaded_at,
        _assigned_at,
    from {{ source }}_records
    where {{ field }} is not null
    {% if not (outer_loop.last and loop.last) %}union all{% endif %}
    {%- endfor %}
    {%- endfor %}
),

usable as (
    select c.*
    from candidates as c
    left join identifiers as i
        on c.field = i.identifier_type
        and c.value = i.identifier_value
        and c.customer_id = i.customer_id
    where c.field not in ('email', 'phone') or i.customer_id is not null
),

final as (
    select
        u.customer_id,
        u.field,
        u.source,
        r.source_rank,
        u.value,
        u.observed_at,
        u.record_id,
        row_number() over (
            partition by u.customer_id, u.field
            order by r.source_rank, u.observed_at desc nulls last, u.value
        ) = 1 as is_survivor,
        u._loaded_at,
        u._assigned_at,
        {{ customer_field_sources_version() }} as sources_version,
    from usable as u
    inner join source_ranks as r on u.field = r.field and u.source = r.source
)

select * from final
