-- One row per distinct pair of identifiers named by a record (a before b, as in
-- identity_pairs), with how many records name it and the first of them (by time, then key)
-- with its source file and line. identity_identifiers counts each identifier's neighbours
-- from it and identity_edges turns it into links between nodes, so neither groups the
-- pairs of every record itself.
--
-- Incremental: a run reads only the identity_pairs rows built since the newest _built_at
-- here, and the rows here of the pairs they name, and adds them up again (delete+insert by
-- the pair). That equals a full rebuild as long as identity_pairs only gained rows. When it
-- lost some (a record collected again, contacts re-read, a rebuild), its rows built up to
-- that _built_at no longer add up to the record_count here, and the pre-hook empties this
-- table so that the run rebuilds it from every pair.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['a_type', 'a_value', 'b_type', 'b_value'],
    on_schema_change='fail',
    pre_hook=[
        "{{ rebuild_if_columns_changed(added={'_built_at': 'timestamptz'}) }}",
        "{{ rebuild_if_rows_removed_from(ref('identity_pairs'), 'record_count') }}",
    ],
) }}

with pairs as (
    select * from {{ ref('identity_pairs') }}
    {% if is_incremental() %}
    where _built_at > (select coalesce(max(_built_at), '-infinity'::timestamptz) from {{ this }})
    {% endif %}
),

-- The first record of a pair is its smallest (time, key, file, line): a record has one time,
-- file and line, so the key decides ties.
candidates as (
    select
        a_type,
        a_value,
        b_type,
        b_value,
        1::bigint as record_count,  -- a record names a pair once (identity_pairs)
        (seen_at, record_key, source_file, source_line) as first_record,
        _built_at,
    from pairs
    {% if is_incremental() %}
    union all
    select
        old.a_type,
        old.a_value,
        old.b_type,
        old.b_value,
        old.record_count,
        (old.first_seen_at, old.first_record_key, old.first_source_file, old.first_source_line),
        old._built_at,
    from {{ this }} as old
    -- Matched on a hash of the pair: DuckDB then builds the join's hash table from the new
    -- pairs. Matched on the four columns, it built it from this table's every row (its
    -- estimate of the new pairs is the whole of identity_pairs): at 1M customers 1.3 s against
    -- 0.3 s with 1% new data, 1.5 s against 0.02 s with none. A pair whose hash equals a new
    -- pair's without being it is added up alone, into the row it already has.
    where hash(old.a_type, old.a_value, old.b_type, old.b_value)
        in (select hash(a_type, a_value, b_type, b_value) from pairs)
    {% endif %}
),

grouped as (
    select
        a_type,
        a_value,
        b_type,
        b_value,
        sum(record_count)::bigint as record_count,
        min(first_record) as first_record,
        max(_built_at) as _built_at,
    from candidates
    group by a_type, a_value, b_type, b_value
),

final as (
    select
        a_type,
        a_value,
        b_type,
        b_value,
        record_count,
        first_record[1] as first_seen_at,
        first_record[2] as first_record_key,
        first_record[3] as first_source_file,
        first_record[4] as first_source_line,
        _built_at,
    from grouped
)

select * from final
