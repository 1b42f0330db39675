-- Every identifier named by every record (a CRM contact or an event message), with where
-- the record came from. The records that name two or more identifiers make the edges.
with contacts as (
    select * from {{ ref('stg_crm__contacts') }}
),

messages as (
    select * from {{ ref('stg_events__messages') }}
),

known_user_ids as (
    select distinct user_id from messages where user_id is not null
),

contact_identifiers as (
    unpivot (
        select
            'crm_contact:' || contact_id as record_key,
            'crm_contact' as record_source,
            contact_id as record_id,
            _source_file as source_file,
            _source_line as source_line,
            coalesce(created_at, _loaded_at) as seen_at,
            contact_id as crm_contact_id,
            email,
            phone,
        from contacts
    )
    on crm_contact_id, email, phone
    into name identifier_type value identifier_value
),

message_identifiers as (
    unpivot (
        select
            'event:' || message_id as record_key,
            'event' as record_source,
            message_id as record_id,
            _source_file as source_file,
            _source_line as source_line,
            event_at as seen_at,
            user_id,
            anonymous_id,
            previous_id,
            email,
            phone,
        from messages
    )
    on user_id, anonymous_id, previous_id, email, phone
    into name identifier_type value identifier_value
),

-- An alias's previousId is usually an anonymous id; it is a user id when some message uses
-- it as one.
message_identifiers_typed as (
    select
        m.* exclude (identifier_type),
        case
            when m.identifier_type <> 'previous_id' then m.identifier_type
            when u.user_id is not null then 'user_id'
            else 'anonymous_id'
        end as identifier_type,
    from message_identifiers as m
    left join known_user_ids as u
        on m.identifier_type = 'previous_id' and m.identifier_value = u.user_id
),

final as (
    select record_key, record_source, record_id, source_file, source_line, seen_at, identifier_type, identifier_value
    from contact_identifiers
    union all
    select record_key, record_source, record_id, source_file, source_line, seen_at, identifier_type, identifier_value
    from message_identifiers_typed
)

select distinct * from final
