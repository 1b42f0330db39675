-- Every pair of identifiers named by the same record, once per record: (a_type, a_value) sorts
-- before (b_type, b_value). identity_identifiers counts each identifier's neighbours from it
-- and identity_edges links nodes with it, so the occurrences are joined with themselves once,
-- and in an incremental run only for the records that changed.
--
-- Incremental like identity_occurrences, which it follows: CRM contacts are paired again on
-- every run; of the events, the records macro identity_pairs_changed_events names (their old
-- pairs are deleted first, so a record that now pairs nothing keeps none). Rebuilt when raw
-- event rows were removed or the collecting rules changed (rules_version).
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='record_key',
    on_schema_change='fail',
    pre_hook=[
        "{{ rebuild_if_raw_events_removed(\"(select max(_loaded_at) from \" ~ this ~ \" where record_source = 'event')\") }}",
        "{% if is_incremental() %}delete from {{ this }} where record_source = 'crm_contact' or rules_version <> (select rules_version from {{ ref('identity_identifier_types') }} limit 1){% endif %}",
        "{% if is_incremental() %}delete from {{ this }} where record_source = 'event' and record_key in ({{ identity_pairs_changed_events(\"(select max(_loaded_at) from \" ~ this ~ \" where record_source = 'event')\") }}){% endif %}",
    ],
) }}

-- depends_on: {{ ref('stg_events__messages') }}
-- depends_on: {{ ref('identity_identifier_types') }}
with occurrences as (
    select * from {{ ref('identity_occurrences') }}
),

{% if is_incremental() %}
records as (
    select *
    from occurrences
    where record_source = 'crm_contact'
        or record_key in ({{ identity_pairs_changed_events(
            "(select coalesce(max(_loaded_at), '-infinity'::timestamptz) from " ~ this ~ " where record_source = 'event')"
        ) }})
),
{% else %}
records as (
    select * from occurrences
),
{% endif %}

final as (
    select
        a.record_key,
        a.record_source,
        a.seen_at,
        a.source_file,
        a.source_line,
        a.identifier_type as a_type,
        a.identifier_value as a_value,
        b.identifier_type as b_type,
        b.identifier_value as b_value,
        a._loaded_at,
        a.rules_version,
    from records as a
    inner join records as b
        on a.record_key = b.record_key
        and (a.identifier_type, a.identifier_value) < (b.identifier_type, b.identifier_value)
)

select * from final
