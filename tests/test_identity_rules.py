"""The identity rules file: its defaults, its validation, and the rules at work in dbt."""

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from orchestration import identifiers
from orchestration.loading import load_landing
from orchestration.paths import DBT_PROJECT_DIR
from orchestration.warehouse import connect
from seeds.generator import CONTACT_HEADER

RULES = DBT_PROJECT_DIR / "identity_rules.yml"
loader = identifiers.rules_module()


def build(tmp_path: Path, landing: Path, messages: list[dict], select: str, env: dict) -> Path:
    """Write `messages` (all at one time) to landing/events, load the landing into a new
    warehouse and `dbt build --select select` it; returns the warehouse."""
    (landing / "events").mkdir(parents=True, exist_ok=True)
    (landing / "events" / "e.jsonl").write_text(
        "".join(json.dumps({**m, "timestamp": "2026-02-01T10:00:00Z"}) + "\n" for m in messages)
    )
    warehouse = tmp_path / "cdp.duckdb"
    with connect(warehouse) as con:
        load_landing(con, landing)
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("dbt")),
            "build",
            "--select",
            select,
            "--indirect-selection",
            "cautious",
            "--target-path",
            str(tmp_path / "target"),
            "--log-path",
            str(tmp_path / "logs"),
        ],
        cwd=DBT_PROJECT_DIR,
        env={**os.environ, "CDP_WAREHOUSE": str(warehouse), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-5000:]
    return warehouse


def test_the_shipped_rules_hold_the_documented_defaults():
    rules = loader.load_rules(RULES)
    assert list(rules.identifier_types) == [
        "user_id",
        "email",
        "phone",
        "crm_contact_id",
        "anonymous_id",
    ]
    limits = {name: t.max_per_customer for name, t in rules.identifier_types.items()}
    assert limits == {
        "user_id": 1,
        "email": None,
        "phone": None,
        "crm_contact_id": None,
        "anonymous_id": None,
    }
    assert rules.default_country_code == "1" and rules.super_node_threshold == 10
    people = [name for name, t in rules.identifier_types.items() if t.people_level]
    assert people == ["user_id", "email", "phone", "crm_contact_id"]
    # "*" entries apply to every type: one row per type.
    nulls = {b.identifier_type for b in rules.blocklist if b.pattern == "null"}
    assert nulls == set(rules.identifier_types)


def edited(tmp_path: Path, old: str, new: str) -> Path:
    text = RULES.read_text()
    assert old in text
    path = tmp_path / "rules.yml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    "old, new, message",
    [
        (
            "    max_per_customer: 1\n",
            "    max_per_custommer: 1\n",
            "identifier_types.user_id.max_per_custommer: is not a known key; use one of "
            "description, normalize, priority, max_per_customer",
        ),
        (
            "    priority: 3\n",
            "    priority: 2\n",
            "identifier_types.phone.priority: 2 is also the priority of email; give each type "
            "its own priority",
        ),
        (
            "    normalize: email\n",
            "    normalize: mail\n",
            "identifier_types.email.normalize: is 'mail'; use one of id, lowercase_id, email",
        ),
        (
            "    max_per_customer: 1\n",
            "    max_per_customer: 0\n",
            "identifier_types.user_id.max_per_customer: is 0; write a whole number of at least 1",
        ),
        (
            "    people_level: false\n",
            "",
            "identifier_types.anonymous_id.people_level: is None; write true",
        ),
        (
            "  # device_id:\n  #   description: Mobile device id\n",
            "  device_id:\n    description: Mobile device id\n    normalize: id\n"
            "    priority: 9\n    people_level: false\n",
            "identifier_types.device_id: has no source; list event_fields",
        ),
        (
            "  # device_id:\n",
            "  device_id:\n    normalize: id\n    priority: 9\n    people_level: false\n"
            "    event_fields: [device.id]\n",
            "identifier_types.device_id.event_fields[0]: is 'device.id'; write a path starting "
            "with traits., context. or properties.",
        ),
        (
            'default_country_code: "1"',
            'default_country_code: "+1"',
            "default_country_code: is '+1'; write a calling code of 1 to 3 digits",
        ),
        (
            "never_link: []",
            "never_link: [[anonymous_id, fax]]",
            "never_link[0]: names 'fax', not a type",
        ),
        (
            "reason: sequential digits}",
            "reason: sequential digits}\n  - {type: email, pattern: '(?=x).*', reason: odd}",
            "blocklist[19].pattern: is not a valid regular expression",
        ),
        (
            '  - {type: "*", value: "null", reason: placeholder value}',
            '  - {type: "*", value: "null", pattern: "x", reason: placeholder value}',
            "blocklist[0]: needs exactly one of value or pattern",
        ),
        (
            "  - {type: email, value: a@a.com, reason: placeholder address}",
            "  - {type: email, value: a@a.com}",
            "blocklist[14].reason: is missing; say why the value is not an identifier",
        ),
        (
            "identifier_types:\n  user_id:",
            "identifier_types:\n user_id:",
            "not valid YAML",
        ),
    ],
)
def test_a_mistake_in_the_rules_names_the_file_the_key_and_the_fix(tmp_path, old, new, message):
    path = edited(tmp_path, old, new)
    with pytest.raises(loader.RulesError) as error:
        loader.load_rules(path)
    assert str(error.value).startswith(f"{path}")
    assert message in str(error.value)


def test_a_missing_rules_file_says_how_to_restore_it(tmp_path):
    with pytest.raises(loader.RulesError, match="does not exist. Restore dbt_project/"):
        loader.load_rules(tmp_path / "nowhere.yml")


EXTRA_RULES = """
  device_id:
    description: Mobile device id
    normalize: lowercase_id
    priority: 6
    people_level: false
    event_fields: [context.device.id]
  hashed_email:
    normalize: sha256
    priority: 7
    people_level: true
    event_fields: [traits.email_sha256]
"""


@pytest.fixture
def uk_rules(tmp_path, monkeypatch) -> Path:
    text = RULES.read_text().replace('default_country_code: "1"', 'default_country_code: "44"')
    text = text.replace("never_link: []", "never_link:\n  - [anonymous_id, phone]")
    text = text.replace("  # More types are", EXTRA_RULES + "  # More types are")
    path = tmp_path / "uk_rules.yml"
    path.write_text(text)
    monkeypatch.setenv("CDP_IDENTITY_RULES", str(path))
    return path


def test_what_a_user_types_is_normalized_with_the_rules_file_in_use(uk_rules):
    assert identifiers.normalize("phone", "020 7946 0958") == "+442079460958"
    assert identifiers.IDENTIFIER_TYPES[-2:] == ("device_id", "hashed_email")
    assert identifiers.normalize("device_id", " DEV-1 ") == "dev-1"
    digest = "A" * 64
    assert identifiers.normalize("hashed_email", digest) == "a" * 64
    assert identifiers.normalize("hashed_email", "not a digest") is None


def test_the_rules_file_drives_the_dbt_models(tmp_path, uk_rules):
    landing = tmp_path / "landing"
    (landing / "crm").mkdir(parents=True)
    (landing / "events").mkdir()
    (landing / "crm" / "contacts.csv").write_text(
        ",".join(CONTACT_HEADER)
        + "\n301,Ann,Lee,ann@uk.example.co.uk,020 7946 0958,,,lead,,2026-01-05 09:00,,false,,\n"
    )
    messages = [
        {
            "type": "page",
            "messageId": "m1",
            "anonymousId": "x1",
            "context": {"device": {"id": "DEV-1"}},
        },
        {
            "type": "page",
            "messageId": "m2",
            "anonymousId": "x2",
            "context": {"device": {"id": "dev-1"}},
        },
        {
            "type": "identify",
            "messageId": "m3",
            "anonymousId": "x3",
            "traits": {"phone": "020 7946 0958"},
        },
    ]
    warehouse = build(
        tmp_path,
        landing,
        messages,
        "+identifiers_held_out +customer_identifiers",
        {"CDP_IDENTITY_RULES": str(uk_rules)},
    )
    with duckdb.connect() as con:
        con.execute(f"attach '{warehouse}' as warehouse (read_only)")
        con.execute("use warehouse")
        customer = dict(
            ((t, v), c)
            for c, t, v in con.execute(
                "select customer_id, identifier_type, identifier_value "
                "from cdp.customer_identifiers"
            ).fetchall()
        )
        held = con.execute(
            "select identifier_type, identifier_value, rule, detail "
            "from identity.identifiers_held_out"
        ).fetchall()
    # The device id, read from context.device.id and lowercased, links the two visits.
    assert customer[("device_id", "dev-1")] == customer[("anonymous_id", "x1")]
    assert customer[("anonymous_id", "x2")] == customer[("anonymous_id", "x1")]
    # Phones are read in the UK; an anonymous id never links to a phone.
    assert customer[("phone", "+442079460958")] == customer[("crm_contact_id", "301")]
    assert customer[("anonymous_id", "x3")] != customer[("phone", "+442079460958")]
    assert held == [
        (
            "anonymous_id",
            "x3",
            "never_link",
            "not linked to phone:+442079460958 (never_link anonymous_id, phone)",
        )
    ]


@pytest.mark.parametrize("device_sources", [[], ["context.device.id", "properties.device_id"]])
def test_a_record_names_each_identifier_once(tmp_path, monkeypatch, device_sources):
    """An alias whose previousId is its anonymousId, and (when the rules read device_id from
    two fields) a message with the same device id in both, name the identifier once: one
    occurrence, and no pair of an identifier with itself."""
    text = RULES.read_text()
    if device_sources:
        extra = (
            "  device_id:\n    normalize: lowercase_id\n    priority: 6\n"
            f"    people_level: false\n    event_fields: [{', '.join(device_sources)}]\n"
        )
        text = text.replace("  # More types are", extra + "  # More types are")
    rules = tmp_path / "rules.yml"
    rules.write_text(text)
    monkeypatch.setenv("CDP_IDENTITY_RULES", str(rules))
    messages = [
        {
            "type": "alias",
            "messageId": "a1",
            "anonymousId": "anon-1",
            "previousId": "anon-1",
            "userId": "u1",
        },
        {
            "type": "alias",
            "messageId": "a2",
            "anonymousId": "anon-2",
            "previousId": " anon-2 ",
            "userId": "u2",
        },
        {
            "type": "page",
            "messageId": "p1",
            "anonymousId": "anon-3",
            "context": {"device": {"id": "DEV-9"}},
            "properties": {"device_id": "dev-9"},
        },
    ]
    warehouse = build(
        tmp_path, tmp_path / "landing", messages, "+identity_occurrences +identity_pairs", {}
    )
    with duckdb.connect() as con:
        con.execute(f"attach '{warehouse}' as warehouse (read_only)")
        occurrences = con.execute(
            "select record_key, identifier_type, identifier_value "
            "from warehouse.identity.identity_occurrences order by all"
        ).fetchall()
        pairs = con.execute(
            "select record_key, a_type, a_value, b_type, b_value "
            "from warehouse.identity.identity_pairs order by all"
        ).fetchall()
    device = [("event:p1", "device_id", "dev-9")] if device_sources else []
    assert occurrences == [
        ("event:a1", "anonymous_id", "anon-1"),
        ("event:a1", "user_id", "u1"),
        ("event:a2", "anonymous_id", "anon-2"),
        ("event:a2", "user_id", "u2"),
        ("event:p1", "anonymous_id", "anon-3"),
        *device,
    ]
    assert pairs == [
        ("event:a1", "anonymous_id", "anon-1", "user_id", "u1"),
        ("event:a2", "anonymous_id", "anon-2", "user_id", "u2"),
        *([("event:p1", "anonymous_id", "anon-3", "device_id", "dev-9")] if device_sources else []),
    ]
