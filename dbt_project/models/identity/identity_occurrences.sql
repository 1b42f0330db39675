-- Every identifier named by every record (a CRM contact or an event message), normalized by
-- the rules of its type (identity_identifier_types), with where the record came from. A
-- type missing from the rules is not collected; a value that does not normalize is dropped.
-- The records that name two or more identifiers make the edges.
--
-- Incremental: CRM contacts are collected again when a contacts file was loaded since the
-- newest contact here (the pre-hook removes their rows first; macro
-- identity_contacts_changed); of the events, only the messages staged since the newest
-- event here, plus the aliases whose previousId a new message now uses as a userId (it
-- becomes a user id). The table is rebuilt when raw event rows were removed (macro
-- rebuild_if_raw_events_removed) or when the rules that collect identifiers changed (column
-- rules_version). _built_at (the start of the dbt invocation that wrote the row) tells
-- identity_identifier_counts which rows are new.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='record_key',
    on_schema_change='fail',
    pre_hook=[
        "{{ rebuild_if_columns_changed(added={'_loaded_at': 'timestamptz', 'rules_version': 'varchar', '_built_at': 'timestamptz'}, removed=['record_id']) }}",
        "{{ rebuild_if_raw_events_removed(identity_event_watermark()) }}",
        "{{ identity_delete_stale_rows() }}",
        "{% if is_incremental() %}delete from {{ this }} where record_key in (select 'event:' || message_id from {{ ref('stg_events__messages') }} where _loaded_at > {{ identity_event_watermark() }}){% endif %}",
    ],
    post_hook=["{{ fail_on_repeated_keys(['record_key', 'identifier_type', 'identifier_value']) }}"],
) }}

-- depends_on: {{ ref('stg_crm__contacts') }}
-- depends_on: {{ ref('stg_events__messages') }}
-- depends_on: {{ ref('identity_identifier_types') }}
with
{{ identity_record_lists() }},

identifier_types as (
    select * from {{ ref('identity_identifier_types') }}
),

final as (
    select
        record_key,
        record_source,
        source_file,
        source_line,
        seen_at,
        unnest(identifiers, recursive := true),
        _loaded_at,
    from records
)

select
    *,
    (select any_value(rules_version) from identifier_types) as rules_version,
    {{ build_started_at() }} as _built_at,
from final
