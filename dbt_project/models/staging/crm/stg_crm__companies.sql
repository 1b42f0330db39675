with source as (
    select * from {{ source('crm', 'crm_companies') }}
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
        trim(record_id) as company_id,
        nullif(trim(company_name), '') as company_name,
        lower(nullif(trim(company_domain_name), '')) as domain,
        nullif(trim(industry), '') as industry,
        try_cast(number_of_employees as integer) as employee_count,
        try_cast(annual_revenue as double) as annual_revenue,
        nullif(trim(city), '') as city,
        nullif(trim(country_region), '') as country,
        {{ parse_crm_timestamp('create_date') }} as created_at,
        _source_file,
        _source_line,
    from latest
)

select * from final
