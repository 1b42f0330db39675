"""The identifier normalization macros (dbt_project/macros), evaluated by DuckDB."""

import pytest

from orchestration.identifiers import normalize


@pytest.mark.parametrize(
    "raw, expected",
    [
        (" Ana.Smith@Gmail.com ", "ana.smith@gmail.com"),
        ("ANA.SMITH@GMAIL.COM", "ana.smith@gmail.com"),
        ("\tbo@example.org\n", "bo@example.org"),
        ("not an email", None),
        ("missing-at.example.com", None),
        ("two@@example.com", None),
        ("", None),
        ("   ", None),
    ],
)
def test_emails_are_trimmed_lowercased_and_validated(raw, expected):
    assert normalize("email", raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "(415) 555-0123",
        "415.555.0123",
        "+1 415 555 0123",
        "1-415-555-0123",
        "+14155550123",
        "4155550123",
        "001 415 555 0123",
        " 415-555-0123 ",
    ],
)
def test_us_phone_formats_all_become_the_same_e164_number(raw):
    assert normalize("phone", raw) == "+14155550123"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("+44 20 7946 0958", "+442079460958"),
        ("0044 20 7946 0958", "+442079460958"),
    ],
)
def test_international_numbers_keep_their_country_code(raw, expected):
    assert normalize("phone", raw) == expected


@pytest.mark.parametrize(
    "raw", ["123", "555-0123", "+1 415 555 012", "0000000000", "n/a", "", "+0 123 456 789"]
)
def test_values_that_are_not_phone_numbers_become_null(raw):
    assert normalize("phone", raw) is None


def test_ids_are_trimmed_and_empty_ids_become_null():
    assert normalize("user_id", "  u_123 ") == "u_123"
    assert normalize("anonymous_id", "") is None
    assert normalize("crm_contact_id", " 1001 ") == "1001"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("\t\r\n u_1 \x0c", "u_1"),  # tab, CR, LF, space and form feed at either end
        ("u 1", "u 1"),  # inside a value, whitespace stays
        ("\x0bu_1", "\x0bu_1"),  # a vertical tab is not stripped (not in RE2's \s)
        ("\u00a0u_1\u00a0", "\u00a0u_1\u00a0"),  # nor a no-break space
        ("\t\n \r", None),
    ],
)
def test_ids_lose_leading_and_trailing_ascii_whitespace_only(raw, expected):
    assert normalize("user_id", raw) == expected


def test_an_unknown_identifier_type_is_refused_with_the_known_types():
    with pytest.raises(ValueError, match="user_id, email, phone"):
        normalize("fax", "123")
