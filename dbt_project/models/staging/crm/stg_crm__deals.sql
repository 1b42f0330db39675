with source as (
    select * from {{ source('crm', 'crm_deals') }}
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
        trim(record_id) as deal_id,
        nullif(trim(deal_name), '') as deal_name,
        lower(nullif(trim(deal_stage), '')) as deal_stage,
        nullif(trim(pipeline), '') as pipeline,
        try_cast(amount as double) as amount,
        {{ parse_crm_timestamp('close_date') }} as closed_at,
        {{ parse_crm_timestamp('create_date') }} as created_at,
        {{ split_ids('associated_contact_ids') }} as contact_ids,
        {{ split_ids('associated_company_ids') }} as company_ids,
        lower(trim(deal_stage)) in ('closedwon', 'closedlost', 'closed won', 'closed lost') as is_closed,
        lower(trim(deal_stage)) in ('closedwon', 'closed won') as is_won,
        _source_file,
        _source_line,
    from latest
)

select * from final
