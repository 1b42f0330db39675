-- Every pair of identifiers named by the same record, once per record: (a_type, a_value) sorts
-- before (b_type, b_value). identity_distinct_pairs groups it per pair, for the neighbour
-- counts of identity_identifiers and the links of identity_edges. Made from each record's
-- list of identifiers (macro identity_record_lists, as identity_occurrences is), so no join
-- of all occurrences.
--
-- Incremental like identity_occurrences: CRM contacts are paired again when a contacts file
-- was loaded since the newest contact here; of the events, the records macro
-- identity_pairs_changed_events names (their old pairs are deleted first, so a record that
-- now pairs nothing keeps none). Rebuilt when raw event rows were removed or the collecting
-- rules changed (rules_version). _built_at (the start of the dbt invocation that wrote the
-- row) tells identity_distinct_pairs which rows are new.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='record_key',
    on_schema_change='fail',
    pre_hook=[
        "{{ rebuild_if_columns_changed(added={'_built_at': 'timestamptz'}) }}",
        "{{ rebuild_if_raw_events_removed(identity_event_watermark()) }}",
        "{{ identity_delete_stale_rows() }}",
        "{% if is_incremental() %}delete from {{ this }} where record_source = 'event' and record_key in ({{ identity_pairs_changed_events(identity_event_watermark()) }}){% endif %}",
    ],
) }}

-- depends_on: {{ ref('stg_crm__contacts') }}
-- depends_on: {{ ref('stg_events__messages') }}
-- depends_on: {{ ref('identity_identifier_types') }}
with
{{ identity_record_lists(materialize_records=true) }},

identifier_types as (
    select * from {{ ref('identity_identifier_types') }}
),

-- Each record's identifiers sorted by (type, value); pairs (i, j) with i < j.
pairs as (
    select
        *,
        unnest(flatten(list_transform(
            range(1, len(sorted_identifiers)),
            lambda i: list_transform(
                range(i + 1, len(sorted_identifiers) + 1),
                lambda j: {'a': sorted_identifiers[i], 'b': sorted_identifiers[j]}
            )
        ))) as pair,
    from (
        select *, list_sort(identifiers) as sorted_identifiers
        from records
        where len(identifiers) > 1
    )
),

final as (
    select
        record_key,
        record_source,
        seen_at,
        source_file,
        source_line,
        pair.a.identifier_type as a_type,
        pair.a.identifier_value as a_value,
        pair.b.identifier_type as b_type,
        pair.b.identifier_value as b_value,
        _loaded_at,
        (select any_value(rules_version) from identifier_types) as rules_version,
        {{ build_started_at() }} as _built_at,
    from pairs
)

select * from final
