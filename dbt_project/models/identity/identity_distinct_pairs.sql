-- One row per distinct pair of identifiers named by a record (a before b, as in
-- identity_pairs), with how many records name it and the first of them (by time, then key)
-- with its source file and line. identity_identifiers counts each identifier's neighbours
-- from it and identity_edges turns it into links between nodes, so neither groups the
-- pairs of every record itself.
with pairs as (
    select * from {{ ref('identity_pairs') }}
),

-- The smallest (time, key, file, line) of a pair is its first record: a record has one
-- time, file and line, so the key decides ties.
grouped as (
    select
        a_type,
        a_value,
        b_type,
        b_value,
        count(*) as record_count,  -- a record names a pair once (identity_pairs)
        min((seen_at, record_key, source_file, source_line)) as first_record,
    from pairs
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
    from grouped
)

select * from final
