"""CRM exports through mapping presets (HubSpot, Salesforce) and crm/mapping.yml."""

from pathlib import Path

import pytest

from orchestration.loading import load_landing
from tests.conftest import rows


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    (tmp_path / "landing" / "crm").mkdir(parents=True)
    return tmp_path / "landing"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_salesforce_report_and_api_exports_fill_the_same_columns(con, landing):
    write(
        landing / "crm" / "contacts-report.csv",
        "Contact ID,First Name,Last Name,Email,Phone,Account Name,Account ID,Created Date,"
        "Email Opt Out,Mailing City,Mailing Country,Title\n"
        "003A1,Ada,Lovelace,ada@example.com,+44 20 7946 0000,Acme,001X,2026-01-05,1,London,"
        "United Kingdom,CTO\n",
    )
    write(
        landing / "crm" / "contacts-api.csv",
        "Id,FirstName,LastName,Email,MobilePhone,AccountId,CreatedDate,HasOptedOutOfEmail,"
        "MailingCity,MailingCountry,OwnerId\n"
        "003A2,Alan,Turing,alan@example.com,+44 161 496 0000,001Y,"
        "2026-01-06T10:00:00.000+0000,false,Manchester,United Kingdom,005Z\n",
    )
    write(
        landing / "crm" / "companies.csv",
        "Account ID,Account Name,Website,Industry,Employees,Annual Revenue,Billing City,"
        "Billing Country,Created Date\n"
        "001X,Acme,acme.example,Retail,50,1000000,London,UK,2025-12-01\n",
    )
    write(
        landing / "crm" / "deals.csv",
        "Opportunity ID,Opportunity Name,Stage,Amount,Close Date,Created Date,Account ID,"
        "Contact ID\n006A,Acme renewal,Closed Won,1200,2026-02-01,2026-01-10,001X,003A1\n",
    )
    write(
        landing / "crm" / "tickets.csv",
        "Case ID,Subject,Status,Priority,Case Origin,Date/Time Opened,Contact ID\n"
        "500A,Login broken,Closed,High,Email,01/15/2026 09:30,003A1\n",
    )

    report = load_landing(con, landing)

    assert {f.path.name: f.mapping for f in report.files} == {
        "companies.csv": "salesforce",
        "contacts-api.csv": "salesforce",
        "contacts-report.csv": "salesforce",
        "deals.csv": "salesforce",
        "tickets.csv": "salesforce",
    }
    assert rows(
        con,
        "SELECT record_id, first_name, last_name, email, phone_number, company_name, "
        "associated_company_id, create_date, unsubscribed_from_all_email, city, country_region, "
        "attributes "
        "FROM raw.crm_contacts ORDER BY record_id",
    ) == [
        ("003A1", "Ada", "Lovelace", "ada@example.com", "+44 20 7946 0000", "Acme", "001X",
         "2026-01-05", "1", "London", "United Kingdom", '{"title":"CTO"}'),
        ("003A2", "Alan", "Turing", "alan@example.com", "+44 161 496 0000", None, "001Y",
         "2026-01-06T10:00:00.000+0000", "false", "Manchester", "United Kingdom",
         '{"ownerid":"005Z"}'),
    ]  # fmt: skip
    assert rows(
        con,
        "SELECT record_id, company_name, company_domain_name, number_of_employees, city "
        "FROM raw.crm_companies",
    ) == [("001X", "Acme", "acme.example", "50", "London")]
    assert rows(
        con,
        "SELECT deal_name, deal_stage, associated_contact_ids, associated_company_ids "
        "FROM raw.crm_deals",
    ) == [("Acme renewal", "Closed Won", "003A1", "001X")]
    assert rows(
        con, "SELECT ticket_name, ticket_status, source, create_date FROM raw.crm_tickets"
    ) == [("Login broken", "Closed", "Email", "01/15/2026 09:30")]


def test_hubspot_headers_match_whatever_their_case_spacing_and_order(con, landing):
    write(
        landing / "crm" / "contacts.csv",
        "  EMAIL , record id,first_name,LIFECYCLE-STAGE,Country / Region,Favourite Colour\n"
        "ada@example.com,1,Ada,customer,France,teal\n",
    )

    report = load_landing(con, landing)

    assert report.files[0].mapping == "hubspot"
    assert rows(
        con,
        "SELECT record_id, email, first_name, lifecycle_stage, country_region, attributes "
        "FROM raw.crm_contacts",
    ) == [("1", "ada@example.com", "Ada", "customer", "France", '{"favourite_colour":"teal"}')]


def test_a_mapping_file_maps_any_csv_and_may_pin_the_preset(con, landing):
    write(
        landing / "crm" / "mapping.yml",
        "preset: hubspot\n"
        "contacts:\n"
        "  record_id: Customer Number\n"
        "  email: [E-mail address, Mail]\n"
        "  create_date: Signed up\n",
    )
    write(
        landing / "crm" / "contacts-shop.csv",
        "Customer Number,E-mail address,First Name,Signed up,Loyalty Tier\n"
        "C-1,ada@example.com,Ada,2026-01-05,gold\n"
        "C-2,bob@example.com,Bob,whenever,silver\n",
    )

    report = load_landing(con, landing)

    assert report.files[0].mapping == "hubspot + crm/mapping.yml"
    assert rows(
        con, "SELECT record_id, email, first_name, create_date, attributes FROM raw.crm_contacts"
    ) == [("C-1", "ada@example.com", "Ada", "2026-01-05", '{"loyalty_tier":"gold"}')]
    assert rows(con, "SELECT source_line, reason FROM raw.rejected_rows") == [
        (3, "unparseable timestamp in 'Signed up': 'whenever'")
    ]
    assert rows(con, "SELECT crm_mapping FROM raw.loaded_files") == [("hubspot + crm/mapping.yml",)]


def test_changing_the_mapping_file_loads_the_crm_files_again(con, landing):
    write(landing / "crm" / "contacts.csv", "Ref,Mail\nC-1,ada@example.com\n")
    write(landing / "crm" / "mapping.yml", "contacts:\n  record_id: Ref\n")
    load_landing(con, landing)
    assert rows(con, "SELECT record_id, email, attributes FROM raw.crm_contacts") == [
        ("C-1", None, '{"mail":"ada@example.com"}')
    ]

    write(landing / "crm" / "mapping.yml", "contacts:\n  record_id: Ref\n  email: Mail\n")
    report = load_landing(con, landing)

    assert [f.status for f in report.files] == ["replaced"]
    assert rows(con, "SELECT record_id, email, attributes FROM raw.crm_contacts") == [
        ("C-1", "ada@example.com", None)
    ]
    assert [f.status for f in load_landing(con, landing).files] == ["unchanged"]


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        ("preset: pipedrive\n", "key 'preset' is 'pipedrive'; use one of hubspot, salesforce"),
        ("leads:\n  record_id: Id\n", "unknown key 'leads'; the keys are preset, contacts"),
        ("contacts:\n  emial: Mail\n", "contacts.emial is not a column of raw.crm_contacts"),
        ("contacts:\n  email: [1, 2]\n", "contacts.email must be an export header"),
        ("contacts: [Id]\n", "key 'contacts' must map raw columns to export headers"),
        ("contacts:\n  email: [Mail\n", "mapping.yml"),
    ],
)
def test_an_invalid_mapping_file_names_the_key_and_the_fix_and_events_still_load(
    con, landing, mapping, expected
):
    write(landing / "crm" / "mapping.yml", mapping)
    write(landing / "crm" / "contacts.csv", "Record ID,Email\n1,ada@example.com\n")
    (landing / "events").mkdir()
    write(
        landing / "events" / "a.jsonl",
        '{"type":"page","messageId":"m1","anonymousId":"a","timestamp":"2026-03-01"}\n',
    )
    lines: list[str] = []

    report = load_landing(con, landing, progress=lines.append)

    contacts, events = report.files
    assert contacts.status == "unreadable" and expected in contacts.error
    assert str(landing / "crm" / "mapping.yml") in contacts.error
    assert events.status == "loaded" and events.rows_loaded == 1
    assert any(line.startswith("CRM exports are not loaded:") for line in lines)
    assert rows(con, "SELECT count(*) FROM raw.loaded_files") == [(1,)]


def test_a_file_no_mapping_can_read_is_unreadable_with_the_accepted_id_headers(con, landing):
    write(landing / "crm" / "deals.csv", "Name,Value\nBig,100\n")

    report = load_landing(con, landing)

    error = report.files[0].error
    assert report.files[0].status == "unreadable"
    assert "'Record ID'" in error and "'Opportunity ID'" in error
    assert "crm/mapping.yml (deals: {record_id: YOUR HEADER})" in error
