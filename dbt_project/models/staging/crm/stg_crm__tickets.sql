with source as (
    select * from {{ source('crm', 'crm_tickets') }}
),

latest as (
    select *
    from source
    qualify row_number() over (
        partition by trim(record_id) order by _source_file desc, _source_line desc
    ) = 1
),

final as (
    select
        trim(record_id) as ticket_id,
        nullif(trim(ticket_name), '') as ticket_name,
        lower(nullif(trim(ticket_status), '')) as ticket_status,
        lower(nullif(trim(priority), '')) as priority,
        nullif(trim(source), '') as ticket_source,
        {{ parse_crm_timestamp('create_date') }} as created_at,
        {{ split_ids('associated_contact_ids') }} as contact_ids,
        lower(trim(ticket_status)) not in ('closed', 'resolved', '4') as is_open,
        _source_file,
        _source_line,
    from latest
)

select * from final
