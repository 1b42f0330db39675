"""Data quality: great-expectations suites on the raw tables as blocking Dagster checks, and a
landing folder holding every kind of bad input run to the end through the real `cdp run`."""

import gzip
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from orchestration import checks
from orchestration.assets.raw import raw_tables
from orchestration.checks import CHECK_NAME, check_result, raw_data_quality
from orchestration.expectations import suite_rows, suites, validate
from orchestration.loading import load_landing
from orchestration.resources import CdpPaths
from tests.conftest import run_cdp

HUBSPOT = "Record ID,First Name,Email,Create Date"


def message(message_id: str, **fields) -> dict:
    base = {
        "type": "track",
        "event": "Product Added",
        "messageId": message_id,
        "anonymousId": f"anon-{message_id}",
        "timestamp": "2026-03-01T10:00:00Z",
    }
    return {key: value for key, value in {**base, **fields}.items() if value is not None}


def jsonl(messages: list) -> bytes:
    return "".join((m if isinstance(m, str) else json.dumps(m)) + "\n" for m in messages).encode()


def contacts(emails: list[str]) -> str:
    lines = [f"{i},P{i},{email},2026-01-0{i % 9 + 1}" for i, email in enumerate(emails, start=1)]
    return HUBSPOT + "\n" + "\n".join(lines) + "\n"


def build_landing(root: Path, contact_emails: list[str]) -> Path:
    (root / "crm").mkdir(parents=True)
    (root / "events").mkdir()
    (root / "crm" / "contacts.csv").write_text(contacts(contact_emails))
    events = [
        message("m1", traits={"email": "ada@example.com"}, type="identify"),
        message("m2", traits={"email": "not-an-email"}, type="identify"),
        message("m3", timestamp="1999-12-31T23:00:00Z"),
        message("m3"),  # a duplicate message id
        message("m5"),
    ]
    (root / "events" / "events.jsonl").write_bytes(jsonl(events))
    return root


def outcomes_by_rule(con, table: str) -> dict[str, tuple[bool, int, int]]:
    suite = suites(datetime.now(UTC))[table]
    return {o.rule.says: (o.success, o.unexpected, o.checked) for o in validate(con, suite)}


def test_each_suite_reports_every_expectation_with_its_counts(tmp_path):
    landing = build_landing(tmp_path / "landing", ["a@example.com", "b@example.com", "nope"])
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        load_landing(con, landing)
        events = outcomes_by_rule(con, "raw.events")
        people = outcomes_by_rule(con, "raw.crm_contacts")
        tickets = outcomes_by_rule(con, "raw.crm_tickets")

    assert events == {
        "message_id is present": (True, 0, 5),
        "type is an accepted message type": (True, 0, 5),
        "userId or anonymousId is present": (True, 0, 5),
        "event_at is between 2000-01-01 and tomorrow": (False, 1, 5),
        "message_id is unique (duplicates are removed in staging)": (False, 2, 5),
        "traits.email looks like an email address": (False, 1, 2),
    }
    assert people == {
        "record_id is present": (True, 0, 3),
        "email looks like an email address in at least half of the rows "
        "(else the mapping is likely wrong)": (True, 1, 3),
        "email looks like an email address": (False, 1, 3),
    }
    assert tickets == {"record_id is present": (True, 0, 0)}


def test_validation_does_not_fingerprint_the_rows(tmp_path, monkeypatch):
    """great-expectations hashes every row of a pandas batch under 1 GB for a fingerprint that
    nothing reads (seconds at millions of rows); validate turns that off and still counts."""
    from great_expectations.execution_engine import pandas_execution_engine

    def no_fingerprint(frame):
        raise AssertionError(f"fingerprinted a batch of {len(frame)} rows")

    monkeypatch.setattr(pandas_execution_engine, "hash_pandas_dataframe", no_fingerprint)
    landing = build_landing(tmp_path / "landing", ["a@example.com", "nope"])
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        load_landing(con, landing)
        events = outcomes_by_rule(con, "raw.events")
    assert events["message_id is unique (duplicates are removed in staging)"] == (False, 2, 5)
    assert events["traits.email looks like an email address"] == (False, 1, 2)


def test_the_event_suite_counts_only_the_rows_loaded_since_and_finds_an_unknown_type(tmp_path):
    """A row written into raw.events by hand with an unknown type fails the critical type
    rule; of the rows loaded since a time, only those are validated: a message id repeated
    among them is counted, one repeated only with an older row is not."""
    landing = build_landing(tmp_path / "landing", ["a@example.com"])
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        load_landing(con, landing)
        since = con.execute("SELECT max(_loaded_at) + INTERVAL 1 SECOND FROM raw.events")
        since = since.fetchone()[0]
        con.execute(
            "INSERT INTO raw.events (message_id, type, user_id, event_at, _source_file, "
            "_source_line, _loaded_at) VALUES "
            "('m1', 'track', 'u1', now(), 'by-hand', 1, $at), "  # repeats an older row's id
            "('m9', 'bogus', 'u1', now(), 'by-hand', 2, $at), "
            "('m9', 'track', 'u1', now(), 'by-hand', 3, $at)",
            {"at": since},
        )
        suite = suites(datetime.now(UTC))["raw.events"]
        outcomes = {
            o.rule.says: (o.success, o.unexpected, o.checked)
            for o in validate(con, suite, suite_rows(con, suite, since))
        }

    assert outcomes["type is an accepted message type"] == (False, 1, 3)
    assert outcomes["message_id is unique (duplicates are removed in staging)"] == (False, 2, 3)


def test_a_failed_critical_expectation_is_an_error_and_warnings_alone_are_a_warn(tmp_path):
    landing = build_landing(tmp_path / "landing", ["Ada", "Bob", "c@example.com"])
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        load_landing(con, landing)
        by_table = suites(datetime.now(UTC))
        people = check_result("raw.crm_contacts", validate(con, by_table["raw.crm_contacts"]))
        events = check_result("raw.events", validate(con, by_table["raw.events"]))

    assert (people.passed, people.severity) == (False, dg.AssetCheckSeverity.ERROR)
    assert "in at least half of the rows" in people.description
    assert (events.passed, events.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert events.metadata["expectations_failed"].value == 3
    assert "not-an-email" not in str(events.metadata)  # counts only: no values (PII) shown


@dg.asset(deps=[dg.AssetKey(["raw", "crm_contacts"])])
def contacts_downstream() -> None:
    """Stands for the dbt models downstream of the raw tables."""


@pytest.mark.parametrize(
    ("emails", "downstream_runs"),
    [(["Ada", "Bob", "c@example.com"], False), (["a@example.com", "b@example.com", "x"], True)],
)
def test_blocking_checks_stop_downstream_assets_on_error_only(tmp_path, emails, downstream_runs):
    landing = build_landing(tmp_path / "landing", emails)
    paths = CdpPaths(warehouse=str(tmp_path / "w.duckdb"), landing=str(landing))

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [raw_tables, raw_data_quality, contacts_downstream],
            resources={"paths": paths},
            instance=instance,
            raise_on_error=False,
        )
        evaluations = {".".join(e.asset_key.path): e for e in result.get_asset_check_evaluations()}

    assert set(evaluations) == {
        "raw.crm_contacts",
        "raw.crm_companies",
        "raw.crm_deals",
        "raw.crm_tickets",
        "raw.events",
    }
    assert all(e.check_name == CHECK_NAME and e.blocking for e in evaluations.values())
    assert evaluations["raw.events"].severity == dg.AssetCheckSeverity.WARN
    materialized = {
        event.event_specific_data.materialization.asset_key
        for event in result.get_asset_materialization_events()
    }
    ran = dg.AssetKey("contacts_downstream") in materialized
    assert ran is downstream_runs
    assert result.success is downstream_runs


def _imported(module: str) -> bool:
    return module in sys.modules


def test_the_load_step_starts_the_checks_child_with_great_expectations_imported(tmp_path):
    """raw_tables starts the validation child, which imports great-expectations (seconds)
    while the exports load; the check step of the same process validates in that child and
    then ends it."""
    landing = build_landing(tmp_path / "landing", ["a@example.com", "b@example.com"])
    paths = CdpPaths(warehouse=str(tmp_path / "w.duckdb"), landing=str(landing))
    with dg.instance_for_test() as instance:
        assert dg.materialize([raw_tables], resources={"paths": paths}, instance=instance).success
    assert checks._prepared is not None
    child = checks._prepared  # one worker: this runs after the import it was started with
    assert child.submit(_imported, "great_expectations").result(timeout=300)

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [raw_tables, raw_data_quality], resources={"paths": paths}, instance=instance
        )
    assert result.success
    assert len(result.get_asset_check_evaluations()) == 5
    assert checks._prepared is None
    with pytest.raises(RuntimeError, match="shutdown"):  # the check used it, then ended it
        child.submit(_imported, "great_expectations")


def test_rows_that_blocked_a_run_block_the_next_one_until_fixed(tmp_path):
    """Checks read the rows loaded since the last run without a critical failure: a second
    run that loads nothing new still finds the bad rows and still blocks; once the file is
    fixed (its rows replaced) the run goes through, and the run after it validates nothing."""
    landing = build_landing(tmp_path / "landing", ["Ada", "Bob", "c@example.com"])
    paths = CdpPaths(warehouse=str(tmp_path / "w.duckdb"), landing=str(landing))

    def run() -> tuple[bool, dict[str, str]]:
        with dg.instance_for_test() as instance:
            result = dg.materialize(
                [raw_tables, raw_data_quality, contacts_downstream],
                resources={"paths": paths},
                instance=instance,
                raise_on_error=False,
            )
        evaluations = result.get_asset_check_evaluations()
        return result.success, {".".join(e.asset_key.path): e.description for e in evaluations}

    assert run()[0] is False
    blocked, descriptions = run()  # nothing new loaded
    assert blocked is False
    assert "on the 3 rows" in descriptions["raw.crm_contacts"]
    fixed = contacts(["a@example.com", "b@example.com", "c@example.com"])
    (landing / "crm" / "contacts.csv").write_text(fixed)
    assert run()[0] is True
    success, descriptions = run()
    assert success is True
    assert "on the 0 rows" in descriptions["raw.crm_contacts"]


# --------------------------------------------------------------------------- messy landing


def build_messy_landing(root: Path) -> dict[str, tuple[int, int]]:
    """Every kind of bad input; returns file -> (rows loaded, rows rejected) it must give."""
    crm, events = root / "crm", root / "events"
    crm.mkdir(parents=True)
    events.mkdir()
    expected: dict[str, tuple[int, int]] = {}

    # HubSpot contacts, UTF-8 with a BOM: 3 good rows; no id, a bad date, a short row
    (crm / "contacts-2026-01.csv").write_bytes(
        (
            "\ufeff" + HUBSPOT + "\n1,Ada,ada@example.com,2026-01-05\n2,Zoë,zoe@example.com,\n"
            ",Nobody,nobody@example.com,2026-01-05\n4,Cy,cy@example.com,someday\n5,Short\n"
            "6,Di,di@example.com,01/31/2026\n"
        ).encode("utf-8")
    )
    expected["crm/contacts-2026-01.csv"] = (3, 3)
    # Latin-1 contacts
    (crm / "contacts-2026-02.csv").write_bytes(
        (HUBSPOT + "\n7,José,jose@example.com,2026-02-01\n").encode("latin-1")
    )
    expected["crm/contacts-2026-02.csv"] = (1, 0)
    (crm / "companies.csv").write_bytes(b"")  # an empty export
    expected["crm/companies.csv"] = (0, 0)
    (crm / "deals.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")  # not CSV at all
    # Salesforce cases
    (crm / "tickets-salesforce.csv").write_text(
        "Case ID,Subject,Status,Priority,Case Origin,Date/Time Opened,Contact ID\n"
        "500A,Login broken,New,High,Email,2026-03-01T10:00:00.000Z,1\n"
    )
    expected["crm/tickets-salesforce.csv"] = (1, 0)

    lines = [
        message("e1", userId="u1", type="identify", traits={"email": "ada@example.com"}),
        message(
            "e2",
            timestamp=None,
            originalTimestamp="2026-03-01T09:00:00Z",
            sentAt="2026-03-01T09:00:01Z",
            receivedAt="2026-03-01T10:00:02Z",
        ),
        '{"type": "track", "event": "Product Added", "messageId": "e3", "anonym',  # truncated
        message("e4", userId=True),  # wrong type
        message(None),  # missing messageId
        message("e6", anonymousId=None),  # no userId nor anonymousId
        message("e7", timestamp="yesterday"),  # unparseable timestamp
        "",  # blank: neither read nor rejected
        message("e1", userId="u1", type="identify"),  # the same messageId again
        message("e9", context={"traits": {"email": "zoe@example.com"}}, userId="u2"),
    ]
    (events / "events-2026-03.jsonl").write_bytes(jsonl(lines))
    expected["events/events-2026-03.jsonl"] = (4, 5)
    (events / "events-copy-of-2026-03.jsonl").write_bytes(jsonl(lines))  # the same file again
    (events / "events-bom-crlf.jsonl").write_bytes(
        b"\xef\xbb\xbf" + b"\r\n".join(json.dumps(message(f"b{i}")).encode() for i in range(2))
    )
    expected["events/events-bom-crlf.jsonl"] = (2, 0)
    (events / "events-2026-04.jsonl.gz").write_bytes(
        gzip.compress(jsonl([message("g1"), message("g2", type="teleport"), message("g3")]))
    )
    expected["events/events-2026-04.jsonl.gz"] = (2, 1)
    (events / "events-broken.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00 not gzip at all")
    (events / "empty.jsonl").write_bytes(b"")
    expected["events/empty.jsonl"] = (0, 0)
    (events / "notes.txt").write_text("not an export")
    return expected


def test_a_messy_landing_runs_to_the_end_with_every_row_accounted_for(tmp_path):
    landing = tmp_path / "landing"
    expected = build_messy_landing(landing)
    warehouse = tmp_path / "warehouse" / "cdp.duckdb"
    home = tmp_path / "dagster"
    env = {"DAGSTER_HOME": str(home), "CDP_WAREHOUSE": "", "CDP_LANDING_DIR": ""}

    result = run_cdp("run", "--landing", str(landing), "--warehouse", str(warehouse), env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    published = warehouse.with_name("cdp_published.duckdb")
    with duckdb.connect(str(published), read_only=True) as con:
        files = {
            Path(path).relative_to(landing).as_posix(): (status, read, loaded, rejected)
            for path, status, read, loaded, rejected in con.execute(
                "SELECT file_path, status, rows_read, rows_loaded, rows_rejected "
                "FROM raw.loaded_files"
            ).fetchall()
        }
        rejected_per_file = dict(
            con.execute("SELECT source_file, count(*) FROM raw.rejected_rows GROUP BY 1").fetchall()
        )
        loaded_per_file = dict(
            con.execute(
                "SELECT _source_file, count(*) FROM ("
                "SELECT _source_file FROM raw.events UNION ALL "
                "SELECT _source_file FROM raw.crm_contacts UNION ALL "
                "SELECT _source_file FROM raw.crm_tickets) GROUP BY 1"
            ).fetchall()
        )
        event_at = con.execute("SELECT event_at FROM raw.events WHERE message_id = 'e2'").fetchall()
        customers = con.execute("SELECT count(*) FROM cdp.customers").fetchall()[0][0]

    for name, (loaded, rejected) in expected.items():
        status, read, got_loaded, got_rejected = files[name]
        assert (read, got_loaded, got_rejected) == (loaded + rejected, loaded, rejected), name
        path = str(landing / name)
        assert loaded_per_file.get(path, 0) == loaded, name
        assert rejected_per_file.get(path, 0) == rejected, name
    assert files["events/events-copy-of-2026-03.jsonl"][0] == "duplicate"
    assert "crm/deals.csv" not in files and "events/events-broken.jsonl.gz" not in files
    assert event_at == [(datetime(2026, 3, 1, 10, 0, 1, tzinfo=UTC),)]  # clock corrected
    assert customers > 0

    out = result.stdout
    read = sum(loaded + rejected for loaded, rejected in expected.values())
    loaded = sum(loaded for loaded, _rejected in expected.values())
    assert f"rows read = {loaded:,} loaded + {read - loaded:,} rejected" in out
    assert re.search(r"UNREADABLE \S+/crm/deals\.csv: \S+ is not a CSV file", out)
    assert re.search(r"UNREADABLE \S+/events/events-broken\.jsonl\.gz: cannot decompress", out)
    assert "Quality    " in out
    assert re.search(r"raw\.events: WARN: .*message_id is unique .*FAILED \(2 of ", out)
    assert "raw.crm_tickets: passed" in out

    run_id = re.search(r"Run (\S+) succeeded", out).group(1)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        evaluations = [record.dagster_event.event_specific_data for record in records]
    checks = {"/".join(e.asset_key.path): e for e in evaluations if e.check_name == CHECK_NAME}
    assert set(checks) == {
        "raw/events",
        "raw/crm_contacts",
        "raw/crm_companies",
        "raw/crm_deals",
        "raw/crm_tickets",
    }
    assert checks["raw/events"].passed is False
    assert "| message_id is unique" in checks["raw/events"].metadata["expectations"].value
