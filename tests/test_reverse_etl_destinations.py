"""Every destination against a real server, with faults injected.

The webhook, HubSpot and audience destinations talk to tests/destination_server.py (a real
HTTP server on 127.0.0.1); the PostgreSQL destination to a real PostgreSQL server started
by tests/postgres_server.py. After every fault scenario the destination holds exactly the
source segment: nothing lost, nothing applied twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import duckdb
import psycopg
import pytest

from reverse_etl.config import ConfigError, SyncConfig, load_syncs
from reverse_etl.engine import SyncError, run_sync
from tests.destination_server import (
    AUDIENCE_TOKEN,
    HUBSPOT_TOKEN,
    WEBHOOK_SECRET,
    DestinationServer,
    Fault,
)

MEMBERS = 120


def network(backoff_seconds: float = 0.01, **more: float) -> str:
    """Destination settings for tests: short timeouts and backoffs (the defaults are seconds)."""
    settings = {
        "timeout_seconds": 0.5,
        "max_attempts": 6,
        "backoff_seconds": backoff_seconds,
        "max_backoff_seconds": 2,
        **more,
    }
    return "".join(f"      {key}: {value}\n" for key, value in settings.items())


# --------------------------------------------------------------------------- fixtures


def member(i: int) -> tuple:
    return (
        f"cus_{i:04d}",
        f"person{i}@example.com",
        f"First{i}",
        f"Last{i}",
        Decimal(f"{i * 10}.50"),
        "customer" if i % 3 else "lead",
    )


def add_members(con, first: int, end: int) -> None:
    """Insert members ``first <= i < end``, the same rows as ``member(i)``."""
    con.execute(
        """INSERT INTO segments.members SELECT 'cus_' || lpad(i::VARCHAR, 4, '0'),
           'person' || i || '@example.com', 'First' || i, 'Last' || i,
           CAST(i * 10 + 0.5 AS DECIMAL(18, 2)), CASE WHEN i % 3 = 0 THEN 'lead' ELSE 'customer' END
           FROM range(?, ?) t(i)""",
        [first, end],
    )


@pytest.fixture
def con(tmp_path: Path):
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    connection.execute("CREATE SCHEMA segments")
    connection.execute(
        """CREATE TABLE segments.members (customer_id VARCHAR, email VARCHAR,
           first_name VARCHAR, last_name VARCHAR, lifetime_revenue DECIMAL(18, 2),
           lifecycle_stage VARCHAR)"""
    )
    add_members(connection, 1, MEMBERS + 1)
    yield connection
    connection.close()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("TEST_HUBSPOT_TOKEN", HUBSPOT_TOKEN)
    monkeypatch.setenv("TEST_META_TOKEN", AUDIENCE_TOKEN)
    with DestinationServer() as running:
        yield running


def load_one(tmp_path: Path, text: str) -> SyncConfig:
    path = tmp_path / "syncs.yml"
    path.write_text("syncs:\n" + text)
    [sync] = load_syncs(path)
    return sync


def webhook_sync(tmp_path, server, mode="mirror", batch_size=25, extra="") -> SyncConfig:
    """A webhook sync of segments.members; ``extra`` adds destination settings."""
    return load_one(
        tmp_path,
        f"""\
  - name: members_webhook
    model: members
    primary_key: customer_id
    mode: {mode}
    destination:
      type: webhook
      url: {server.url}/webhook/members
      secret_env: TEST_WEBHOOK_SECRET
      batch_size: {batch_size}
{network()}{extra}
    fields: [customer_id, email, first_name, lifetime_revenue]
""",
    )


def segment(con, where: str = "true") -> dict[str, dict]:
    """The model as the webhook receiver should hold it (computed from the rows)."""
    rows = con.execute(
        "SELECT customer_id, email, first_name, lifetime_revenue FROM segments.members"
        f" WHERE {where}"
    ).fetchall()
    return {
        key: {
            "customer_id": key,
            "email": email,
            "first_name": first,
            "lifetime_revenue": float(revenue),
        }
        for key, email, first, revenue in rows
    }


def assert_applied_once(server: DestinationServer) -> None:
    assert server.applied_operations, "nothing was applied"
    assert max(server.applied_operations.values()) == 1


def change_the_segment(con) -> None:
    con.execute("UPDATE segments.members SET first_name = 'Renamed' WHERE customer_id = 'cus_0007'")
    con.execute("DELETE FROM segments.members WHERE customer_id IN ('cus_0003', 'cus_0050')")
    con.execute(
        "INSERT INTO segments.members VALUES"
        " ('cus_0500', 'new@example.com', 'New', 'Member', 5.00, 'lead')"
    )


# --------------------------------------------------------------------------- webhook


def test_webhook_batches_are_signed_keyed_and_the_receiver_ends_equal_to_the_segment(
    con, tmp_path, server
):
    result = run_sync(con, webhook_sync(tmp_path, server), base_dir=tmp_path)

    assert (result.status, result.delivered, result.batches) == ("succeeded", MEMBERS, 5)
    assert server.records["/webhook/members"] == segment(con)
    requests = server.requests_to("webhook")
    assert [r.rows for r in requests] == [25, 25, 25, 25, 20]
    assert len({r.idempotency_key for r in requests}) == 5
    assert_applied_once(server)

    change_the_segment(con)
    second = run_sync(con, webhook_sync(tmp_path, server), base_dir=tmp_path)

    assert (second.added, second.changed, second.removed) == (1, 1, 2)
    assert server.records["/webhook/members"] == segment(con)
    assert [r.rows for r in server.requests_to("webhook")][5:] == [4]


def test_the_webhook_signature_is_hmac_sha256_of_the_exact_body(tmp_path, server, monkeypatch):
    from reverse_etl.destinations.webhook import WebhookDestination, sign

    body = b'{"sync":"s","operations":[]}'
    expected = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert sign(WEBHOOK_SECRET.encode(), body) == f"sha256={expected}"
    # a receiver holding another secret refuses the batch: the run stops with a hint
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", "not-the-secret")
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE members AS SELECT 'k1' AS customer_id, 'a@b.co' AS email,"
        " 'A' AS first_name, 1.5 AS lifetime_revenue"
    )
    with pytest.raises(SyncError, match=r"HTTP 401.*check the credentials"):
        run_sync(con, webhook_sync(tmp_path, server), base_dir=tmp_path)
    assert WebhookDestination.delivers_on_commit is False


def test_webhook_429_with_retry_after_is_honoured_before_retrying(con, tmp_path, server):
    server.inject("webhook", Fault("status", 429, retry_after="1"))

    started = time.monotonic()
    result = run_sync(con, webhook_sync(tmp_path, server, batch_size=60), base_dir=tmp_path)

    assert result.status == "succeeded"
    first, retry = server.requests_to("webhook")[:2]
    assert first.status == 429 and retry.status == 200
    assert retry.at - first.at >= 0.95
    assert time.monotonic() - started >= 1.0
    assert server.records["/webhook/members"] == segment(con)
    assert_applied_once(server)


def test_webhook_server_errors_timeouts_and_dropped_connections_lose_and_duplicate_nothing(
    con, tmp_path, server
):
    server.inject(
        "webhook",
        Fault("status", 500),
        Fault("drop"),  # applied, but the answer never arrives
        Fault("slow", seconds=0.8),  # answered after the client gave up waiting
        Fault("drop_before"),  # the connection dies before anything is applied
        Fault("status", 502),
    )

    result = run_sync(con, webhook_sync(tmp_path, server), base_dir=tmp_path)

    assert (result.status, result.delivered) == ("succeeded", MEMBERS)
    server.wait_for_requests(10)  # the slow answer is logged when it is finally sent
    requests = server.requests_to("webhook")
    assert Counter(r.status for r in requests) == {200: 6, 0: 2, 500: 1, 502: 1}
    # the first batch was sent six times with the same idempotency key, applied once
    assert Counter(r.idempotency_key for r in requests).most_common(1)[0][1] == 6
    assert server.records["/webhook/members"] == segment(con)
    assert_applied_once(server)


def test_rows_the_webhook_rejects_are_recorded_and_only_they_are_sent_next_run(
    con, tmp_path, server
):
    server.webhook_rejects = {"cus_0010": "email bounced", "cus_0099": "blocked domain"}

    first = run_sync(con, webhook_sync(tmp_path, server), base_dir=tmp_path)

    assert (first.status, first.delivered, first.failed) == ("partial", MEMBERS - 2, 2)
    assert "sync_row_errors" in first.error
    assert con.execute(
        "SELECT record_key, operation, error FROM reverse_etl.sync_row_errors ORDER BY 1"
    ).fetchall() == [
        ("cus_0010", "upsert", "email bounced"),
        ("cus_0099", "upsert", "blocked domain"),
    ]
    server.webhook_rejects = {}
    sent_before = len(server.requests_to("webhook"))

    second = run_sync(con, webhook_sync(tmp_path, server), base_dir=tmp_path)

    assert (second.status, second.planned) == ("succeeded", 2)
    assert [r.rows for r in server.requests_to("webhook")[sent_before:]] == [2]
    assert server.records["/webhook/members"] == segment(con)
    assert_applied_once(server)


def test_a_webhook_that_stays_down_fails_the_run_which_keeps_its_confirmed_batches(
    con, tmp_path, server
):
    # batch 1 goes through, then the receiver answers 503 to every attempt of batch 2
    sync = webhook_sync(tmp_path, server)
    original = server.handle

    def down_after_first(route, method, path, headers, body):
        if len(server.requests_to("webhook")) >= 1:
            return 503, {}, b'{"error": "down"}'
        return original(route, method, path, headers, body)

    server.handle = down_after_first
    with pytest.raises(SyncError, match=r"HTTP 503.*gave up after 6 attempt"):
        run_sync(con, sync, base_dir=tmp_path)
    failed = con.execute(
        "SELECT status, planned, delivered, failed FROM reverse_etl.sync_runs"
    ).fetchall()
    assert failed == [("failed", MEMBERS, 25, MEMBERS - 25)]
    server.handle = original

    result = run_sync(con, sync, base_dir=tmp_path)

    assert (result.status, result.planned) == ("succeeded", MEMBERS - 25)
    assert server.records["/webhook/members"] == segment(con)
    assert_applied_once(server)


def test_a_retry_after_longer_than_the_longest_backoff_stops_the_run_instead_of_sleeping(
    con, tmp_path, server
):
    server.inject("webhook", Fault("status", 503, retry_after="3600"))

    started = time.monotonic()
    with pytest.raises(SyncError, match=r"asked to retry after 3600s.*max_backoff_seconds"):
        run_sync(con, webhook_sync(tmp_path, server), base_dir=tmp_path)

    assert time.monotonic() - started < 5
    assert run_sync(con, webhook_sync(tmp_path, server), base_dir=tmp_path).delivered == MEMBERS
    assert server.records["/webhook/members"] == segment(con)


def test_the_rate_limit_spaces_requests_to_a_destination(con, tmp_path, server):
    sync = webhook_sync(tmp_path, server, batch_size=10, extra="      rate_limit_per_second: 20\n")

    run_sync(con, sync, base_dir=tmp_path)

    times = [r.at for r in server.requests_to("webhook")]
    assert len(times) == 12
    assert min(b - a for a, b in zip(times, times[1:])) >= 0.04
    assert times[-1] - times[0] >= 11 / 20 - 0.02


@pytest.mark.parametrize("mode", ["upsert", "update", "insert", "mirror"])
def test_each_webhook_mode_sends_what_it_promises(con, tmp_path, server, mode):
    records = server.records["/webhook/members"]
    # the receiver already holds two members (one outdated) and someone else's record
    records["cus_0001"] = {"customer_id": "cus_0001", "email": "old@example.com"}
    records["cus_0002"] = segment(con, "customer_id = 'cus_0002'")["cus_0002"]
    records["other"] = {"customer_id": "other"}
    before = {key: dict(value) for key, value in records.items()}
    sync = webhook_sync(tmp_path, server, mode=mode)

    first = run_sync(con, sync, base_dir=tmp_path)
    change_the_segment(con)
    run_sync(con, sync, base_dir=tmp_path)

    expected = {
        "upsert": {**before, **segment(con), **segment_removed_kept()},
        "mirror": {"other": before["other"], **segment(con)},
        "insert": {**first_segment_inserted(before)},
        "update": {**before, "cus_0001": current(con, "cus_0001")},
    }[mode]
    assert records == expected
    assert_applied_once(server)
    if mode == "update":  # the members the receiver did not hold are rejected, kept to retry
        assert first.failed == MEMBERS - 2
        assert con.execute("SELECT DISTINCT error FROM reverse_etl.sync_row_errors").fetchall() == [
            ("no record with this key",)
        ]


def current(con, key: str) -> dict:
    return segment(con, f"customer_id = '{key}'")[key]


def sent_version(i: int) -> dict:
    """Member ``i`` as first sent to the webhook."""
    customer_id, email, first, _, revenue, _ = member(i)
    return {
        "customer_id": customer_id,
        "email": email,
        "first_name": first,
        "lifetime_revenue": float(revenue),
    }


def segment_removed_kept() -> dict:
    """Upsert never deletes: the members removed from the segment stay as last sent."""
    return {f"cus_{i:04d}": sent_version(i) for i in (3, 50)}


def first_segment_inserted(before: dict) -> dict:
    """Insert-only: new members in their first version, existing records untouched."""
    rows = dict(before)
    for i in range(1, MEMBERS + 1):
        rows.setdefault(f"cus_{i:04d}", sent_version(i))
    rows["cus_0500"] = {
        "customer_id": "cus_0500",
        "email": "new@example.com",
        "first_name": "New",
        "lifetime_revenue": 5.0,
    }
    return rows


def test_a_missing_secret_names_the_environment_variable_and_how_to_fix_it(
    con, tmp_path, server, monkeypatch
):
    monkeypatch.delenv("TEST_WEBHOOK_SECRET")

    with pytest.raises(SyncError) as failure:
        run_sync(con, webhook_sync(tmp_path, server), base_dir=tmp_path)

    message = str(failure.value)
    assert "TEST_WEBHOOK_SECRET is not set" in message
    assert "'destination.secret_env'" in message and "syncs.yml" in message
    assert server.requests == []


# --------------------------------------------------------------------------- HubSpot


def hubspot_sync(tmp_path, server, extra="", backoff_seconds=0.01) -> SyncConfig:
    return load_one(
        tmp_path,
        f"""\
  - name: members_hubspot
    model: members
    primary_key: customer_id
    mode: upsert
    destination:
      type: hubspot
      token_env: TEST_HUBSPOT_TOKEN
      base_url: {server.url}
{network(backoff_seconds)}{extra}
    fields:
      email: email
      firstname: first_name
      lifecyclestage: lifecycle_stage
      cdp_customer_id: customer_id
      lifetime_revenue: lifetime_revenue
""",
    )


def hubspot_expected(con) -> dict[str, dict]:
    rows = con.execute(
        "SELECT email, first_name, lifecycle_stage, customer_id, lifetime_revenue"
        " FROM segments.members"
    ).fetchall()
    return {
        email.lower(): {
            "email": email.lower(),
            "firstname": first,
            "lifecyclestage": stage,
            "cdp_customer_id": key,
            "lifetime_revenue": f"{revenue:.2f}",
        }
        for email, first, stage, key, revenue in rows
    }


def contacts(server) -> dict[str, dict]:
    return {email: c["properties"] for email, c in server.contacts.items()}


def test_hubspot_upserts_at_most_100_contacts_a_request_and_creates_each_once(
    con, tmp_path, server
):
    result = run_sync(con, hubspot_sync(tmp_path, server), base_dir=tmp_path)

    assert (result.status, result.delivered) == ("succeeded", MEMBERS)
    assert [r.rows for r in server.requests_to("hubspot")] == [100, 20]
    assert contacts(server) == hubspot_expected(con)
    con.execute(
        "UPDATE segments.members SET lifecycle_stage = 'customer' WHERE customer_id = 'cus_0003'"
    )
    run_sync(con, hubspot_sync(tmp_path, server), base_dir=tmp_path)
    assert [r.rows for r in server.requests_to("hubspot")][2:] == [1]
    assert contacts(server) == hubspot_expected(con)
    assert set(server.contact_creations.values()) == {1}


def test_hubspot_rate_limits_429s_and_server_errors_are_absorbed(con, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_HUBSPOT_TOKEN", HUBSPOT_TOKEN)
    add_members(con, MEMBERS + 1, 601)
    with DestinationServer(hubspot_requests_per_second=4) as server:
        server.inject("hubspot", Fault("status", 429, retry_after="0.3"), Fault("status", 502))
        # HubSpot's 429s carry no Retry-After: the backoff must outlast its 1-second window
        fast = hubspot_sync(
            tmp_path, server, extra="      rate_limit_per_second: 1000\n", backoff_seconds=0.2
        )

        result = run_sync(con, fast, base_dir=tmp_path)

        assert (result.status, result.delivered) == ("succeeded", 600)
        statuses = [r.status for r in server.requests_to("hubspot")]
        assert statuses.count(429) >= 2  # the injected one and the server's own limit
        assert contacts(server) == hubspot_expected(con)
        assert set(server.contact_creations.values()) == {1}

    with DestinationServer(hubspot_requests_per_second=4) as server:
        polite = hubspot_sync(tmp_path, server, extra="      rate_limit_per_second: 3.5\n")
        con.execute("DELETE FROM reverse_etl.sync_state")

        run_sync(con, polite, base_dir=tmp_path)

        assert [r.status for r in server.requests_to("hubspot")] == [200] * 6


def test_hubspot_isolates_invalid_contacts_in_a_rejected_batch_and_upserts_the_rest(
    con, tmp_path, server
):
    con.execute(
        "UPDATE segments.members SET email = 'not-an-email'"
        " WHERE customer_id IN ('cus_0004', 'cus_0090')"
    )
    con.execute("UPDATE segments.members SET email = 'x@y' WHERE customer_id = 'cus_0005'")
    server.hubspot_invalid_values = {"lifecyclestage": {"lead"}}  # answered with a 207

    result = run_sync(con, hubspot_sync(tmp_path, server), base_dir=tmp_path)

    errors = dict(
        con.execute("SELECT record_key, error FROM reverse_etl.sync_row_errors").fetchall()
    )
    leads = {f"cus_{i:04d}" for i in range(3, MEMBERS + 1, 3)}
    assert set(errors) == {"cus_0004", "cus_0005", "cus_0090"} | leads
    assert "Email address not-an-email is invalid" in errors["cus_0004"]
    assert "has an invalid option" in errors["cus_0003"]
    assert result.failed == len(errors)
    valid = hubspot_expected(con)
    assert contacts(server) == {
        email: c for email, c in valid.items() if c["cdp_customer_id"] not in errors
    }
    # splitting stayed cheap: far fewer requests than one per row
    assert len(server.requests_to("hubspot")) < 40

    server.hubspot_invalid_values = {}
    con.execute(
        "UPDATE segments.members SET email = 'fixed' || customer_id || '@example.com'"
        " WHERE customer_id IN ('cus_0004', 'cus_0005', 'cus_0090')"
    )
    second = run_sync(con, hubspot_sync(tmp_path, server), base_dir=tmp_path)
    assert (second.status, second.planned) == ("succeeded", len(errors))
    assert contacts(server) == hubspot_expected(con)


def test_hubspot_batches_over_100_and_literal_tokens_are_config_errors(tmp_path, server):
    with pytest.raises(
        ConfigError, match=r"'destination.batch_size' is 101: it must be at most 100"
    ):
        hubspot_sync(tmp_path, server, extra="      batch_size: 101\n")
    with pytest.raises(ConfigError, match=r"'destination.token' .* use 'token_env: VAR_NAME'"):
        hubspot_sync(tmp_path, server, extra="      token: pat-na1-123\n")


# --------------------------------------------------------------------------- audience


AUDIENCE = "23850000000000001"


@pytest.fixture
def audience_con(con):
    """Messy identifiers, as CRMs hold them."""
    con.execute(
        """CREATE TABLE segments.cart_abandoners AS SELECT
             'cus_' || lpad(i::VARCHAR, 4, '0') AS customer_id,
             CASE WHEN i % 10 = 0 THEN NULL ELSE '  Person' || i || '@Example.COM ' END AS email,
             CASE WHEN i % 2 = 0 THEN '(415) 555-' || lpad(i::VARCHAR, 4, '0')
                  WHEN i % 7 = 0 THEN '+44 20 7946 ' || lpad(i::VARCHAR, 4, '0')
             END AS phone
           FROM range(1, 61) t(i)"""
    )
    return con


def audience_sync(tmp_path, server) -> SyncConfig:
    return load_one(
        tmp_path,
        f"""\
  - name: abandoners_audience
    model: cart_abandoners
    primary_key: customer_id
    mode: audience
    destination:
      type: audience
      audience_id: "{AUDIENCE}"
      access_token_env: TEST_META_TOKEN
      base_url: {server.url}/v21.0
      default_country_code: "1"
      batch_size: 25
{network()}
    fields: [customer_id, email, phone]
""",
    )


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def expected_members(con) -> set[tuple[str, str]]:
    """Normalized by hand from the fixture's patterns: lowercased trimmed email; phone as
    E.164 digits without '+' (Meta), country code 1 added to the US numbers."""
    rows = con.execute("SELECT customer_id, email, phone FROM segments.cart_abandoners").fetchall()
    members = set()
    for key, email, phone in rows:
        i = int(key[4:])
        if email and email.strip().lower() in (f"person{i}@example.com", "changed@example.com"):
            expected_email = email.strip().lower()
        else:
            expected_email = None  # missing, or not an email address
        if phone and phone.startswith("(415)"):
            expected_phone = f"1415555{i:04d}"
        elif phone and phone.startswith("+44"):
            expected_phone = f"44207946{i:04d}"
        else:
            expected_phone = None
        if expected_email or expected_phone:
            members.add(
                (
                    sha(expected_email) if expected_email else "",
                    sha(expected_phone) if expected_phone else "",
                )
            )
    return members


def test_audience_members_are_normalized_hashed_added_and_removed(audience_con, tmp_path, server):
    con = audience_con
    first = run_sync(con, audience_sync(tmp_path, server), base_dir=tmp_path)

    assert (first.status, first.delivered) == ("succeeded", 60)
    assert server.audiences[AUDIENCE] == expected_members(con)
    assert ("", sha("14155550010")) in server.audiences[AUDIENCE]  # a row with a phone only

    con.execute(
        "DELETE FROM segments.cart_abandoners WHERE customer_id IN ('cus_0001', 'cus_0002')"
    )
    con.execute(
        "UPDATE segments.cart_abandoners SET email = 'changed@example.com'"
        " WHERE customer_id = 'cus_0003'"
    )
    con.execute(
        "UPDATE segments.cart_abandoners SET email = ' PERSON4@example.com'"
        " WHERE customer_id = 'cus_0004'"
    )  # same person after normalization
    second = run_sync(con, audience_sync(tmp_path, server), base_dir=tmp_path)

    assert (second.added, second.changed, second.removed) == (0, 2, 2)
    assert server.audiences[AUDIENCE] == expected_members(con)
    # removals (two members left, one old email) before additions (the new email); the
    # member whose email changed only in case and spaces costs no request
    methods = [(r.method, r.rows) for r in server.requests_to("audience")][3:]
    assert methods == [("DELETE", 3), ("POST", 1)]


def test_audience_faults_and_rejected_identifiers(audience_con, tmp_path, server):
    con = audience_con
    con.execute(
        "UPDATE segments.cart_abandoners SET email = 'no email', phone = '12'"
        " WHERE customer_id = 'cus_0011'"
    )
    server.audience_rejects = {sha("person13@example.com"): "customer file restricted"}
    server.inject(
        "audience",
        Fault("status", 503, retry_after="0.2"),
        Fault("drop"),
        Fault("slow", seconds=0.8),
    )

    result = run_sync(con, audience_sync(tmp_path, server), base_dir=tmp_path)

    errors = dict(
        con.execute("SELECT record_key, error FROM reverse_etl.sync_row_errors").fetchall()
    )
    assert errors == {
        "cus_0011": "no email or phone that can be matched (after normalization)",
        "cus_0013": "rejected by the audience API: customer file restricted",
    }
    assert result.delivered == 58
    assert server.audiences[AUDIENCE] == expected_members(con) - {(sha("person13@example.com"), "")}


def test_a_bad_audience_token_stops_the_run_with_a_hint(
    audience_con, tmp_path, server, monkeypatch
):
    monkeypatch.setenv("TEST_META_TOKEN", "expired")

    with pytest.raises(SyncError, match=r"HTTP 401.*check the credentials"):
        run_sync(audience_con, audience_sync(tmp_path, server), base_dir=tmp_path)
    assert server.audiences[AUDIENCE] == set()


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg(postgres_server, monkeypatch):
    dsn = postgres_server.create_database()
    # a password in the connection string must never show in messages (trust auth ignores it)
    monkeypatch.setenv("TEST_PG_DSN", dsn.replace("cdp@", "cdp:s3cret-pw@"))
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


def postgres_sync(tmp_path, mode="mirror", extra="") -> SyncConfig:
    return load_one(
        tmp_path,
        f"""\
  - name: members_pg
    model: members
    primary_key: customer_id
    mode: {mode}
    destination:
      type: postgres
      dsn_env: TEST_PG_DSN
      table: marketing.members
      batch_size: 40
{network()}{extra}
    fields: [customer_id, email, first_name, lifetime_revenue]
""",
    )


def pg_rows(pg, where: str = "true") -> dict[str, tuple]:
    rows = pg.execute(
        "SELECT customer_id, email, first_name, lifetime_revenue FROM marketing.members"
        f" WHERE {where}"
    ).fetchall()
    return {row[0]: row[1:] for row in rows}


def model_rows(con) -> dict[str, tuple]:
    rows = con.execute(
        "SELECT customer_id, email, first_name, lifetime_revenue FROM segments.members"
    ).fetchall()
    return {row[0]: row[1:] for row in rows}


def test_postgres_creates_a_typed_table_and_mirrors_the_segment(con, tmp_path, pg):
    result = run_sync(con, postgres_sync(tmp_path), base_dir=tmp_path)

    assert (result.status, result.delivered, result.batches) == ("succeeded", MEMBERS, 3)
    assert "s3cret-pw" not in (result.output or "")
    columns = dict(
        pg.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'marketing' AND table_name = 'members'"
        ).fetchall()
    )
    assert columns["lifetime_revenue"] == "numeric"
    assert columns["_cdp_created_by_sync"] == "text"
    assert pg_rows(pg) == model_rows(con)

    change_the_segment(con)
    run_sync(con, postgres_sync(tmp_path), base_dir=tmp_path)
    assert pg_rows(pg) == model_rows(con)


def test_postgres_mirror_deletes_only_rows_this_sync_created(con, tmp_path, pg):
    run_sync(con, postgres_sync(tmp_path), base_dir=tmp_path)  # creates the table
    pg.execute("DELETE FROM marketing.members WHERE customer_id = 'cus_0003'")
    # rows someone else wrote: one a member will also be synced to, one unrelated
    pg.execute(
        "INSERT INTO marketing.members (customer_id, email) VALUES"
        " ('cus_0003', 'crm@example.com'), ('vip_1', 'vip@example.com')"
    )
    con.execute("DELETE FROM reverse_etl.sync_state WHERE record_key = 'cus_0003'")
    run_sync(con, postgres_sync(tmp_path), base_dir=tmp_path)  # upserts over cus_0003
    assert pg_rows(pg, "customer_id = 'cus_0003'")["cus_0003"][0] == "person3@example.com"

    change_the_segment(con)  # cus_0003 and cus_0050 leave the segment
    result = run_sync(con, postgres_sync(tmp_path), base_dir=tmp_path)

    assert result.removed == 2
    expected = {**model_rows(con), "cus_0003": pg_rows(pg, "customer_id = 'cus_0003'")["cus_0003"]}
    expected["vip_1"] = ("vip@example.com", None, None)
    assert pg_rows(pg) == expected  # cus_0050 deleted; cus_0003 and vip_1 untouched


def test_postgres_update_and_insert_modes_respect_existing_rows(con, tmp_path, pg):
    pg.execute("CREATE SCHEMA marketing")
    pg.execute(
        "CREATE TABLE marketing.members (customer_id text PRIMARY KEY, email text,"
        " first_name text, lifetime_revenue numeric(18,2))"
    )
    pg.execute(
        "INSERT INTO marketing.members VALUES ('cus_0001', 'old@example.com', 'Old', 1),"
        " ('cus_0002', 'old2@example.com', 'Old2', 2)"
    )

    updated = run_sync(con, postgres_sync(tmp_path, mode="update"), base_dir=tmp_path)

    assert (updated.delivered, updated.failed) == (2, MEMBERS - 2)
    assert pg_rows(pg) == {
        k: v for k, v in model_rows(con).items() if k in ("cus_0001", "cus_0002")
    }
    [(reason,)] = con.execute("SELECT DISTINCT error FROM reverse_etl.sync_row_errors").fetchall()
    assert "mode 'update' only changes existing rows" in reason

    pg.execute("UPDATE marketing.members SET first_name = 'Kept' WHERE customer_id = 'cus_0001'")
    insert_sync = dataclasses.replace(postgres_sync(tmp_path, mode="insert"), name="members_ins")
    inserted = run_sync(con, insert_sync, base_dir=tmp_path)

    assert inserted.delivered == MEMBERS
    rows = pg_rows(pg)
    assert rows["cus_0001"][1] == "Kept"  # an existing row is left alone
    assert set(rows) == set(model_rows(con))


def test_postgres_rejects_only_the_rows_that_break_a_constraint(con, tmp_path, pg):
    run_sync(con, postgres_sync(tmp_path), base_dir=tmp_path)
    pg.execute(
        "ALTER TABLE marketing.members"
        " ADD CONSTRAINT positive CHECK (lifetime_revenue > 20) NOT VALID"
    )
    con.execute("UPDATE segments.members SET lifetime_revenue = lifetime_revenue - 100")

    result = run_sync(con, postgres_sync(tmp_path), base_dir=tmp_path)

    breaking = {k for k, v in model_rows(con).items() if v[2] <= 20}
    errors = dict(
        con.execute("SELECT record_key, error FROM reverse_etl.sync_row_errors").fetchall()
    )
    assert set(errors) == breaking
    assert all("positive" in reason for reason in errors.values())
    assert result.delivered == MEMBERS - len(breaking)
    ok = {k: v for k, v in model_rows(con).items() if k not in breaking}
    assert {k: v for k, v in pg_rows(pg).items() if k in ok} == ok


def test_postgres_upserts_survive_connections_killed_mid_run_without_duplicates(
    con, tmp_path, pg, postgres_server
):
    add_members(con, MEMBERS + 1, 401)
    sync = postgres_sync(tmp_path, mode="upsert", extra="      rate_limit_per_second: 20\n")
    killed = []

    def kill_the_sync_connection():
        """Once batches have landed, terminate the sync's connection (twice)."""
        with postgres_server.connect() as admin:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and len(killed) < 2:
                time.sleep(0.01)
                if pg.execute("SELECT to_regclass('marketing.members')").fetchone()[0] is None:
                    continue
                landed = pg.execute("SELECT count(*) FROM marketing.members").fetchone()[0]
                if landed > 40 * (len(killed) + 1):
                    rows = admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE application_name = 'warehouse-cdp-reverse-etl'"
                    ).fetchall()
                    if rows:
                        killed.append(len(rows))

    killer = threading.Thread(target=kill_the_sync_connection)
    killer.start()
    result = run_sync(con, sync, base_dir=tmp_path)
    killer.join()

    assert killed, "the sync's connection was never killed"
    assert (result.status, result.delivered) == ("succeeded", 400)
    assert pg_rows(pg) == model_rows(con)


def test_an_unreachable_postgres_fails_after_retries_without_showing_the_password(
    con, tmp_path, monkeypatch
):
    monkeypatch.setenv("TEST_PG_DSN", "postgresql://cdp:s3cret-pw@127.0.0.1:1/nowhere")

    with pytest.raises(SyncError) as failure:
        run_sync(con, postgres_sync(tmp_path, extra=""), base_dir=tmp_path)

    message = str(failure.value)
    assert "gave up after 6 attempt" in message and "127.0.0.1:1" in message
    assert "s3cret-pw" not in message
