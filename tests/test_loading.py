"""The loader: landing directory -> raw.* tables (docs/architecture.md, "Raw tables")."""

from __future__ import annotations

import gzip
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestration import loading
from orchestration.loading import FILE_KINDS, ensure_raw_schema, load_landing
from orchestration.loading import events as events_module
from orchestration.loading import files as files_module
from orchestration.loading import landing as landing_module
from tests.conftest import event, rows

CONTACT_HEADER = "Record ID,First Name,Email,Create Date,Country/Region"


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def write_events(path: Path, messages: list) -> Path:
    lines = [m if isinstance(m, str) else json.dumps(m) for m in messages]
    data = ("\n".join(lines) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    directory = tmp_path / "landing"
    directory.mkdir()
    return directory


def rejected(con) -> list[tuple]:
    return rows(
        con,
        "SELECT file_kind, source_line, reason FROM raw.rejected_rows "
        "ORDER BY source_file, source_line",
    )


def status_of(report, name: str) -> str:
    return next(f.status for f in report.files if f.path.name == name)


@pytest.fixture
def hashed(monkeypatch) -> list[str]:
    """The names of the files the loader hashes with fingerprint() (which still runs)."""
    names: list[str] = []
    real = landing_module.fingerprint

    def counting(path: Path):
        names.append(path.name)
        return real(path)

    monkeypatch.setattr(landing_module, "fingerprint", counting)
    return names


@pytest.fixture
def no_racy_window(monkeypatch) -> None:
    """Record the stat of files changed just now (a test's files are all younger than
    RACY_SECONDS, whose stat the loader does not record)."""
    monkeypatch.setattr(landing_module, "RACY_SECONDS", 0.0)


def stat_of(path: Path) -> tuple[int, int, int, int]:
    stat = path.stat()
    return (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


def recorded_stat(con, path: Path) -> tuple:
    return rows(
        con,
        "SELECT file_size, file_mtime_ns, file_ctime_ns, file_inode FROM raw.loaded_files "
        "WHERE file_path = ?",
        [str(path.resolve())],
    )[0]


def test_loading_crm_and_events_fills_the_raw_tables_with_file_and_line(con, landing):
    contacts = write(
        landing / "crm" / "contacts-2026-01.csv",
        f"{CONTACT_HEADER}\n1,Ada,ada@example.com,2026-01-05,France\n2,Bob,,,\n",
    )
    write(landing / "crm" / "companies.csv", "Record ID,Company name\nc1,Acme\n")
    write(landing / "crm" / "deals.csv", "Record ID,Deal Name,Close Date\nd1,Big,01/31/2026\n")
    write(landing / "crm" / "tickets.csv", "Record ID,Ticket name\nt1,Broken\n")
    events = write_events(
        landing / "events" / "events-2026-03.jsonl",
        [event("m1", userId="u1", properties={"revenue": 12.5}), event("m2")],
    )

    report = load_landing(con, landing)

    assert [f.status for f in report.files] == ["loaded"] * 5
    assert rows(
        con,
        "SELECT record_id, first_name, email, create_date, country_region, _source_file, "
        "_source_line FROM raw.crm_contacts ORDER BY record_id",
    ) == [
        ("1", "Ada", "ada@example.com", "2026-01-05", "France", str(contacts.resolve()), 2),
        ("2", "Bob", None, None, None, str(contacts.resolve()), 3),
    ]
    assert rows(con, "SELECT record_id, company_name FROM raw.crm_companies") == [("c1", "Acme")]
    assert rows(con, "SELECT close_date FROM raw.crm_deals") == [("01/31/2026",)]
    assert rows(con, "SELECT ticket_name FROM raw.crm_tickets") == [("Broken",)]
    assert rows(
        con,
        "SELECT message_id, type, event, user_id, anonymous_id, event_at, "
        "properties->>'revenue', _source_file, _source_line FROM raw.events ORDER BY 1",
    ) == [
        (
            "m1",
            "track",
            "Order Completed",
            "u1",
            "anon-1",
            datetime(2026, 3, 1, 10, tzinfo=UTC),
            "12.5",
            str(events.resolve()),
            1,
        ),
        (
            "m2",
            "track",
            "Order Completed",
            None,
            "anon-1",
            datetime(2026, 3, 1, 10, tzinfo=UTC),
            None,
            str(events.resolve()),
            2,
        ),
    ]
    assert report.by_kind() == {
        "contacts": (2, 0),
        "companies": (1, 0),
        "deals": (1, 0),
        "tickets": (1, 0),
        "events": (2, 0),
    }
    assert rows(con, "SELECT count(*) FROM raw.loaded_files WHERE status = 'loaded'") == [(5,)]


def test_each_malformed_csv_row_is_rejected_with_its_reason_and_line(con, landing):
    write(
        landing / "crm" / "contacts.csv",
        f"{CONTACT_HEADER}\n"
        "1,Ada,ada@example.com,2026-01-05,France\n"  # line 2: fine
        "2,Bob\n"  # line 3: too few fields
        ",Cy,cy@example.com,2026-01-05,\n"  # line 4: no record id
        "4,Di,di@example.com,soon,\n"  # line 5: bad date
        "5,Ed,ed@example.com,2026-01-05T10:00:00+02:00,Spain,extra\n"  # line 6: too many
        "6,Fay,fay@example.com,02/28/2026 09:30,\n",  # line 7: US date, fine
    )

    report = load_landing(con, landing)

    assert rejected(con) == [
        ("contacts", 3, "expected 5 fields, found 2"),
        ("contacts", 4, "missing required field 'Record ID'"),
        ("contacts", 5, "unparseable timestamp in 'Create Date': 'soon'"),
        ("contacts", 6, "expected 5 fields, found 6"),
    ]
    assert rows(con, "SELECT record_id FROM raw.crm_contacts ORDER BY 1") == [("1",), ("6",)]
    assert rows(con, "SELECT raw_text FROM raw.rejected_rows WHERE source_line = 3") == [("2,Bob",)]
    file = report.files[0]
    assert (file.rows_read, file.rows_loaded, file.rows_rejected) == (6, 2, 4)


def test_each_malformed_event_is_rejected_with_its_reason_and_line(con, landing):
    write_events(
        landing / "events" / "events.jsonl",
        [
            event("ok"),  # 1
            "{not json",  # 2
            "[1, 2]",  # 3
            event("m4", type="foo"),  # 4
            event(None),  # 5
            event("m6", timestamp="not-a-date"),  # 6
            event("m7", anonymousId=None),  # 7
            event("m8", event=None),  # 8
            event("m9", type="alias", userId="u9"),  # 9
            (
                '{"messageId": "m10", "type": "track", "event": "x", "anonymousId": "a",'
                ' "timestamp": "2026-01-01T00:00:00Z", "properties": {"n": NaN}}'
            ),  # 10
        ],
    )

    report = load_landing(con, landing)

    reasons = [(line, reason) for _kind, line, reason in rejected(con)]
    assert reasons[0][0] == 2 and reasons[0][1].startswith("invalid JSON: ")
    assert reasons[1:] == [
        (3, "not a JSON object"),
        (4, "unknown message type 'foo'"),
        (5, "missing required field 'messageId'"),
        (6, "unparseable timestamp in 'timestamp': 'not-a-date'"),
        (7, "missing userId and anonymousId"),
        (8, "track message without 'event'"),
        (9, "alias message without 'previousId'"),
        (10, reasons[-1][1]),
    ]
    assert reasons[-1][1].startswith("invalid JSON: ")  # NaN is not JSON
    assert rows(con, "SELECT raw_text FROM raw.rejected_rows WHERE source_line = 2") == [
        ("{not json",)
    ]
    assert rows(con, "SELECT message_id, _source_line FROM raw.events") == [("ok", 1)]
    assert (report.rows_read, report.rows_loaded, report.rows_rejected) == (10, 1, 9)


def test_rows_read_always_equals_rows_loaded_plus_rows_rejected(con, landing):
    write(landing / "crm" / "contacts.csv", f"{CONTACT_HEADER}\n1,A,,,\n2\n\n,B,,,\n")
    write_events(landing / "events" / "a.jsonl", [event("m1"), "nope", "", "   ", event("m2")])

    report = load_landing(con, landing)

    for file in report.files:
        assert file.rows_read == file.rows_loaded + file.rows_rejected
    # blank lines are not rows: 3 CSV records and 3 event lines were read
    assert [(f.rows_read, f.rows_loaded, f.rows_rejected) for f in report.files] == [
        (3, 1, 2),
        (3, 2, 1),
    ]
    assert rows(
        con,
        "SELECT sum(rows_read), sum(rows_loaded), sum(rows_rejected) FROM raw.loaded_files",
    ) == [(6, 3, 3)]
    assert rows(con, "SELECT count(*) FROM raw.rejected_rows") == [(3,)]
    assert report.rows_read == report.rows_loaded + report.rows_rejected == 6


def test_loading_the_same_files_twice_loads_nothing_twice(con, landing):
    write(landing / "crm" / "contacts.csv", f"{CONTACT_HEADER}\n1,A,,,\nbad\n")
    write_events(landing / "events" / "a.jsonl", [event("m1"), "nope"])
    load_landing(con, landing)

    again = load_landing(con, landing)

    assert [f.status for f in again.files] == ["unchanged", "unchanged"]
    assert again.rows_read == again.rows_loaded == again.rows_rejected == 0
    assert rows(con, "SELECT count(*) FROM raw.crm_contacts") == [(1,)]
    assert rows(con, "SELECT count(*) FROM raw.events") == [(1,)]
    assert rows(con, "SELECT count(*) FROM raw.rejected_rows") == [(2,)]
    assert rows(con, "SELECT count(*) FROM raw.loaded_files") == [(2,)]


def test_a_changed_file_replaces_its_earlier_rows_and_rejects(con, landing):
    contacts = write(landing / "crm" / "contacts.csv", f"{CONTACT_HEADER}\n1,A,,,\n2,B,,,\nbad\n")
    events = write_events(landing / "events" / "a.jsonl", [event("m1"), event("m2"), "nope"])
    load_landing(con, landing)

    write(contacts, f"{CONTACT_HEADER}\n2,B2,,,\n3,C,,,\n")
    write_events(events, [event("m2"), event("m3", userId="u3")])
    report = load_landing(con, landing)

    assert [f.status for f in report.files] == ["replaced", "replaced"]
    assert rows(
        con, "SELECT record_id, first_name, _source_line FROM raw.crm_contacts ORDER BY 1"
    ) == [
        ("2", "B2", 2),
        ("3", "C", 3),
    ]
    assert rows(con, "SELECT message_id FROM raw.events ORDER BY 1") == [("m2",), ("m3",)]
    assert rows(con, "SELECT count(*) FROM raw.rejected_rows") == [(0,)]
    assert rows(con, "SELECT status, rows_loaded FROM raw.loaded_files ORDER BY file_path") == [
        ("replaced", 2),
        ("replaced", 2),
    ]


def test_a_copy_of_a_file_under_another_name_is_a_duplicate_and_loads_nothing(con, landing):
    original = write_events(landing / "events" / "a.jsonl", [event("m1"), event("m2")])
    copy = landing / "events" / "b.jsonl"
    copy.write_bytes(original.read_bytes())

    report = load_landing(con, landing)

    assert [(f.path.name, f.status) for f in report.files] == [
        ("a.jsonl", "loaded"),
        ("b.jsonl", "duplicate"),
    ]
    assert report.files[1].duplicate_of == original.resolve()
    assert rows(con, "SELECT count(*) FROM raw.events") == [(2,)]
    assert rows(
        con,
        "SELECT status, rows_read, rows_loaded FROM raw.loaded_files WHERE file_path = ?",
        [str(copy.resolve())],
    ) == [("duplicate", 0, 0)]
    assert [f.status for f in load_landing(con, landing).files] == ["unchanged", "unchanged"]


def test_a_file_whose_stat_is_unchanged_is_not_read_again(con, landing, hashed, no_racy_window):
    contacts = write(landing / "crm" / "contacts.csv", f"{CONTACT_HEADER}\n1,A,,,\n")
    events = write_events(landing / "events" / "a.jsonl", [event("m1")])
    copy = landing / "events" / "b.jsonl"
    copy.write_bytes(events.read_bytes())
    first = load_landing(con, landing)
    assert [f.status for f in first.files] == ["loaded", "loaded", "duplicate"]
    for path in (contacts, events, copy):
        assert recorded_stat(con, path) == stat_of(path)
    hashed.clear()

    again = load_landing(con, landing)

    assert [f.status for f in again.files] == ["unchanged"] * 3
    assert hashed == []

    mtime = contacts.stat().st_mtime_ns + 1_000_000_000
    os.utime(contacts, ns=(mtime, mtime))  # touched: new times, same bytes
    touched = load_landing(con, landing)

    assert [f.status for f in touched.files] == ["unchanged"] * 3
    assert hashed == ["contacts.csv"]
    assert recorded_stat(con, contacts) == stat_of(contacts)
    assert rows(con, "SELECT count(*) FROM raw.crm_contacts") == [(1,)]
    hashed.clear()

    assert [f.status for f in load_landing(con, landing).files] == ["unchanged"] * 3
    assert hashed == []


def test_a_file_rewritten_in_place_with_the_same_size_is_loaded_again(con, landing, no_racy_window):
    contacts = write(landing / "crm" / "contacts.csv", f"{CONTACT_HEADER}\n1,A,,,\n")
    events = write_events(landing / "events" / "a.jsonl", [event("m1")])
    load_landing(con, landing)
    loaded = recorded_stat(con, contacts)
    time.sleep(0.02)  # past a coarse filesystem clock's tick, so that the times differ

    write(contacts, f"{CONTACT_HEADER}\n1,B,,,\n")  # same size, same inode
    os.utime(contacts, ns=(contacts.stat().st_atime_ns, loaded[1]))  # and its old mtime
    write_events(events, [event("m2")])
    changed = stat_of(contacts)
    assert [now == then for now, then in zip(changed, loaded)] == [True, True, False, True]
    report = load_landing(con, landing)

    assert [f.status for f in report.files] == ["replaced", "replaced"]
    assert rows(con, "SELECT record_id, first_name FROM raw.crm_contacts") == [("1", "B")]
    assert rows(con, "SELECT message_id FROM raw.events") == [("m2",)]
    assert recorded_stat(con, contacts) == changed


def test_a_file_changed_while_it_loads_is_hashed_again_next_run(
    con, landing, monkeypatch, no_racy_window
):
    contacts = write(landing / "crm" / "contacts.csv", f"{CONTACT_HEADER}\n1,A,,,\n")
    real = landing_module.fingerprint

    def hash_then_change(path: Path):
        digest = real(path)
        write(contacts, f"{CONTACT_HEADER}\n1,A,,,\n2,B,,,\n")  # an export still being written
        return digest

    monkeypatch.setattr(landing_module, "fingerprint", hash_then_change)
    assert [f.status for f in load_landing(con, landing).files] == ["loaded"]
    monkeypatch.setattr(landing_module, "fingerprint", real)

    again = load_landing(con, landing)

    assert [f.status for f in again.files] == ["replaced"]
    assert rows(con, "SELECT content_hash FROM raw.loaded_files") == [(real(contacts)[0],)]
    assert rows(con, "SELECT record_id FROM raw.crm_contacts ORDER BY 1") == [("1",), ("2",)]


def test_a_file_recorded_without_its_stat_is_hashed_once_and_still_unchanged(
    con, landing, hashed, no_racy_window
):
    contacts = write(landing / "crm" / "contacts.csv", f"{CONTACT_HEADER}\n1,A,,,\n")
    load_landing(con, landing)
    for column in ("file_size", "file_mtime_ns", "file_ctime_ns", "file_inode"):
        con.execute(f"ALTER TABLE raw.loaded_files DROP COLUMN {column}")  # an older warehouse
    hashed.clear()

    upgraded = load_landing(con, landing)

    assert [f.status for f in upgraded.files] == ["unchanged"]
    assert hashed == ["contacts.csv"]
    assert recorded_stat(con, contacts) == stat_of(contacts)
    hashed.clear()

    assert [f.status for f in load_landing(con, landing).files] == ["unchanged"]
    assert hashed == []


def test_the_stat_of_a_file_changed_just_before_its_load_is_not_recorded(
    con, landing, hashed, monkeypatch
):
    monkeypatch.setattr(landing_module, "RACY_SECONDS", 3600.0)  # however slow the machine
    contacts = write(landing / "crm" / "contacts.csv", f"{CONTACT_HEADER}\n1,A,,,\n")
    load_landing(con, landing)  # within RACY_SECONDS of the write
    hashed.clear()

    again = load_landing(con, landing)

    assert recorded_stat(con, contacts) == (None, None, None, None)
    assert [f.status for f in again.files] == ["unchanged"]
    assert hashed == ["contacts.csv"]


def test_gzipped_events_load_like_plain_ones(con, landing):
    write_events(landing / "events" / "a.jsonl.gz", [event("m1"), "nope", event("m3")])

    report = load_landing(con, landing)

    assert status_of(report, "a.jsonl.gz") == "loaded"
    assert rows(con, "SELECT message_id, _source_line FROM raw.events ORDER BY 2") == [
        ("m1", 1),
        ("m3", 3),
    ]
    assert rejected(con) == [("events", 2, rejected(con)[0][2])]


def test_csv_with_a_bom_and_csv_in_latin1_both_load(con, landing):
    write(landing / "crm" / "contacts-bom.csv", f"\ufeff{CONTACT_HEADER}\n1,Zoë,,,\n", "utf-8")
    write(landing / "crm" / "contacts-latin1.csv", f"{CONTACT_HEADER}\n2,José,,,Perú\n", "latin-1")
    (landing / "crm" / "contacts-mixed.csv").write_bytes(
        b"\xef\xbb\xbf" + f"{CONTACT_HEADER}\n3,Ren\xe9,,,\n".encode("latin-1")
    )

    report = load_landing(con, landing)

    assert [f.status for f in report.files] == ["loaded"] * 3
    assert rows(
        con, "SELECT record_id, first_name, country_region FROM raw.crm_contacts ORDER BY 1"
    ) == [("1", "Zoë", None), ("2", "José", "Perú"), ("3", "René", None)]


def test_events_with_a_bom_and_events_in_snake_case_load(con, landing):
    write(
        landing / "events" / "bom.jsonl",
        "\ufeff" + json.dumps(event("m1")) + "\n",
    )
    write_events(
        landing / "events" / "snake.jsonl",
        [
            {
                "message_id": "m2",
                "type": "identify",
                "user_id": 42,
                "anonymous_id": "anon-2",
                "original_timestamp": "2026-03-01T12:00:00+02:00",
                "received_at": "2026-03-01T10:00:05Z",
                "traits": {"email": "x@example.com"},
            },
            {
                "messageId": "m3",
                "type": "alias",
                "userId": "u3",
                "previous_id": "anon-3",
                "receivedAt": "2026-03-01 10:00:00",
            },
            {
                "messageId": "m4",
                "type": "group",
                "userId": "u4",
                "group_id": "g4",
                "timestamp": "2026-03-01T10:00:00.123456Z",
            },
        ],
    )

    report = load_landing(con, landing)

    assert report.rows_rejected == 0
    assert rows(
        con,
        "SELECT message_id, type, user_id, anonymous_id, previous_id, group_id, event_at, "
        "received_at, traits->>'email' FROM raw.events ORDER BY 1",
    ) == [
        (
            "m1",
            "track",
            None,
            "anon-1",
            None,
            None,
            datetime(2026, 3, 1, 10, tzinfo=UTC),
            None,
            None,
        ),
        (
            "m2",
            "identify",
            "42",
            "anon-2",
            None,
            None,
            datetime(2026, 3, 1, 10, tzinfo=UTC),
            datetime(2026, 3, 1, 10, 0, 5, tzinfo=UTC),
            "x@example.com",
        ),
        (
            "m3",
            "alias",
            "u3",
            None,
            "anon-3",
            None,
            datetime(2026, 3, 1, 10, tzinfo=UTC),
            datetime(2026, 3, 1, 10, tzinfo=UTC),
            None,
        ),
        (
            "m4",
            "group",
            "u4",
            None,
            None,
            "g4",
            datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC),
            None,
            None,
        ),
    ]


def test_traits_fall_back_to_context_traits(con, landing):
    write_events(
        landing / "events" / "a.jsonl",
        [
            event(
                "own",
                type="identify",
                traits={"plan": "pro"},
                context={"traits": {"plan": "ignored"}},
            ),
            event("ctx", context={"ip": "10.0.0.1", "traits": {"email": "a@example.com"}}),
            event("none", context={"ip": "10.0.0.2"}),
        ],
    )

    load_landing(con, landing)

    assert rows(
        con,
        "SELECT message_id, traits::VARCHAR, context->>'ip' FROM raw.events ORDER BY 1",
    ) == [
        ("ctx", '{"email":"a@example.com"}', "10.0.0.1"),
        ("none", None, "10.0.0.2"),
        ("own", '{"plan":"pro"}', None),
    ]


def test_a_corrupt_gzip_and_a_binary_file_are_unreadable_and_the_rest_still_loads(con, landing):
    write(landing / "crm" / "contacts.csv", f"{CONTACT_HEADER}\n1,A,,,\n")
    (landing / "crm" / "deals.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00")
    (landing / "events").mkdir()
    (landing / "events" / "broken.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00this is not gzip")
    good = gzip.compress(b"".join(json.dumps(event(f"m{i}")).encode() + b"\n" for i in range(50)))
    (landing / "events" / "truncated.jsonl.gz").write_bytes(good[: len(good) // 2])
    write_events(landing / "events" / "zz-good.jsonl", [event("g1")])

    report = load_landing(con, landing)

    assert [(f.path.name, f.status) for f in report.files] == [
        ("contacts.csv", "loaded"),
        ("deals.csv", "unreadable"),
        ("broken.jsonl.gz", "unreadable"),
        ("truncated.jsonl.gz", "unreadable"),
        ("zz-good.jsonl", "loaded"),
    ]
    errors = {f.path.name: f.error for f in report.unreadable}
    assert "not a CSV file" in errors["deals.csv"] and "deals.csv" in errors["deals.csv"]
    assert "gzip" in errors["broken.jsonl.gz"] and "again" in errors["broken.jsonl.gz"]
    assert "truncated.jsonl.gz" in errors["truncated.jsonl.gz"]
    # nothing of an unreadable file is kept, not even the lines before the damage
    assert rows(con, "SELECT message_id FROM raw.events") == [("g1",)]
    assert rows(con, "SELECT count(*) FROM raw.crm_deals") == [(0,)]
    assert rows(con, "SELECT count(*) FROM raw.loaded_files") == [(2,)]
    assert rows(con, "SELECT count(*) FROM raw.rejected_rows") == [(0,)]


def test_an_unreadable_file_keeps_nothing_even_after_several_batches(con, landing, monkeypatch):
    monkeypatch.setattr(events_module, "BLOCK_BYTES", 4096)
    data = b"".join(json.dumps(event(f"m{i}")).encode() + b"\n" for i in range(5000))
    packed = gzip.compress(data)
    (landing / "events").mkdir()
    (landing / "events" / "big.jsonl.gz").write_bytes(packed[: len(packed) - 200])

    report = load_landing(con, landing)

    assert report.files[0].status == "unreadable"
    assert rows(con, "SELECT count(*) FROM raw.events") == [(0,)]


def test_a_file_without_read_permission_is_unreadable(con, landing, monkeypatch):
    locked = write(landing / "crm" / "contacts.csv", f"{CONTACT_HEADER}\n1,A,,,\n")
    write(landing / "crm" / "deals.csv", "Record ID\nd1\n")

    def refusing_open(file, *args, **kwargs):  # root ignores chmod, so refuse here
        if Path(file) == locked.resolve():
            raise PermissionError(13, "Permission denied", str(file))
        return open(file, *args, **kwargs)

    monkeypatch.setattr(files_module, "open", refusing_open, raising=False)

    report = load_landing(con, landing)

    assert [f.status for f in report.files] == ["unreadable", "loaded"]
    assert "permission denied" in report.files[0].error
    assert str(locked.resolve()) in report.files[0].error


def test_a_csv_without_a_record_id_column_is_unreadable(con, landing):
    write(landing / "crm" / "contacts.csv", "Name,Email\nA,a@example.com\n")

    report = load_landing(con, landing)

    assert report.files[0].status == "unreadable"
    assert "'Record ID'" in report.files[0].error


def test_a_new_column_in_a_later_export_is_added(con, landing):
    write(landing / "crm" / "contacts-1.csv", "Record ID,Email\n1,a@example.com\n")
    load_landing(con, landing)
    write(landing / "crm" / "contacts-2.csv", "Record ID,Email,Phone Number\n2,b@example.com,555\n")

    load_landing(con, landing)

    assert rows(con, "SELECT record_id, email, phone_number FROM raw.crm_contacts ORDER BY 1") == [
        ("1", "a@example.com", None),
        ("2", "b@example.com", "555"),
    ]


def test_unmapped_headers_are_kept_as_attributes_under_unique_snake_cased_names(con, landing):
    write(
        landing / "crm" / "contacts.csv",
        "Record ID,Unsubscribed from all email,Email,EMAIL ,Job Title,Région,,Job title\n"
        "1,true,a@x.com,b@x.com,CTO,IDF,z,\n",
    )

    load_landing(con, landing)

    assert rows(
        con,
        "SELECT record_id, unsubscribed_from_all_email, email, attributes FROM raw.crm_contacts",
    ) == [
        (
            "1",
            "true",
            "a@x.com",
            '{"email_2":"b@x.com","job_title":"CTO","region":"IDF","column_7":"z"}',
        )
    ]


def test_a_quoted_field_over_several_lines_keeps_physical_line_numbers(con, landing):
    write(
        landing / "crm" / "tickets.csv",
        'Record ID,Content\nt1,"line one\nline two\nline three"\nt2,plain\n\nt3,"x"\n',
    )

    load_landing(con, landing)

    assert rows(con, "SELECT record_id, _source_line FROM raw.crm_tickets ORDER BY 1") == [
        ("t1", 2),
        ("t2", 5),
        ("t3", 7),
    ]
    assert rows(
        con, "SELECT attributes->>'content' FROM raw.crm_tickets WHERE record_id = 't1'"
    ) == [("line one\nline two\nline three",)]


def test_empty_files_load_with_zero_rows_and_are_not_duplicates(con, landing):
    write(landing / "crm" / "contacts.csv", "")
    write(landing / "crm" / "deals.csv", "")
    write(landing / "events" / "empty.jsonl", "")

    report = load_landing(con, landing)

    assert [(f.status, f.rows_read) for f in report.files] == [("loaded", 0)] * 3


def test_only_crm_and_events_are_scanned_and_other_files_are_ignored(con, landing):
    write(landing / "truth.csv", "person_id,identifier_type,identifier_value\n")
    write(landing / "README.md", "hello")
    write(landing / "crm" / "notes.txt", "not an export")
    write(landing / "crm" / "owners.csv", "Record ID\n1\n")
    write(landing / "events" / "events.json", "{}")
    write_events(landing / "events" / "a.jsonl", [event("m1")])
    lines: list[str] = []

    report = load_landing(con, landing, progress=lines.append)

    assert [f.path.name for f in report.files] == ["a.jsonl"]
    assert [p.name for p in report.ignored] == ["notes.txt", "owners.csv", "events.json"]
    assert lines[0] == "events/a.jsonl: 1 loaded, 0 rejected"
    assert len(lines) == 4 and all("ignored" in line for line in lines[1:])


def test_a_missing_landing_directory_raises_and_names_the_path(con, tmp_path):
    missing = tmp_path / "nowhere"

    with pytest.raises(FileNotFoundError) as raised:
        load_landing(con, missing)

    assert str(missing) in str(raised.value)
    assert "crm/contacts*.csv" in str(raised.value) and "events/*.jsonl" in str(raised.value)


def test_ensure_raw_schema_is_idempotent_and_creates_every_raw_table(con):
    ensure_raw_schema(con)
    ensure_raw_schema(con)

    tables = {
        t for (t,) in rows(con, "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'raw'")
    }
    assert tables == {
        "crm_contacts",
        "crm_companies",
        "crm_deals",
        "crm_tickets",
        "events",
        "loaded_files",
        "rejected_rows",
    }
    assert set(loading.RAW_TABLES) == set(FILE_KINDS)


def test_events_json_objects_are_stored_with_zstd(con, landing):
    """raw.events keeps traits, properties and context with ZSTD compression (schema.py),
    which DuckDB does not choose by itself for strings this short; the other columns keep
    DuckDB's own choice."""
    messages = [
        event(f"m{i}", userId=f"u{i}", event="Product Viewed",
              properties={"sku": f"sku-{i % 50}", "price": i % 97},
              context={"page": {"url": f"https://shop.example/p/{i % 50}"}, "ip": "10.0.0.1"},
              traits={"plan": "pro"})
        for i in range(3000)
    ]  # fmt: skip
    write_events(landing / "events" / "e.jsonl", messages)
    load_landing(con, landing)
    con.execute("CHECKPOINT")
    stored = dict(
        rows(
            con,
            "SELECT column_name, list(DISTINCT compression ORDER BY compression) "
            "FROM pragma_storage_info('raw.events') WHERE segment_type <> 'VALIDITY' "
            "AND compression NOT IN ('Constant', 'Empty Validity') GROUP BY column_name",
        )
    )
    assert {column: stored[column] for column in ("traits", "properties", "context")} == {
        column: ["ZSTD"] for column in ("traits", "properties", "context")
    }
    assert "ZSTD" not in stored["message_id"]
    assert rows(con, "SELECT count(*), count(DISTINCT properties->>'sku') FROM raw.events") == [
        (3000, 50)
    ]


def test_progress_reports_one_line_per_file_with_counts(con, landing):
    write_events(landing / "events" / "events-2026-10.jsonl", [event("a"), event("b"), "x"])
    lines: list[str] = []

    load_landing(con, landing, progress=lines.append)
    load_landing(con, landing, progress=lines.append)

    assert lines == [
        "events/events-2026-10.jsonl: 2 loaded, 1 rejected",
        "events/events-2026-10.jsonl: unchanged, skipped",
    ]


def test_repeated_message_ids_are_counted_not_dropped(con, landing):
    write_events(landing / "events" / "a.jsonl", [event("m1"), event("m1"), event("m2")])

    report = load_landing(con, landing)

    assert report.repeated_message_ids == 1
    assert rows(con, "SELECT count(*) FROM raw.events") == [(3,)]

    # A later load counts its own rows only: m2 was loaded before, m3 repeats in the file.
    write_events(
        landing / "events" / "b.jsonl", [event("m2"), event("m3"), event("m3"), event("m4")]
    )
    assert load_landing(con, landing).repeated_message_ids == 2
    assert load_landing(con, landing).repeated_message_ids == 0  # nothing new
    assert rows(con, "SELECT count(*) - count(DISTINCT message_id) FROM raw.events") == [(3,)]


def test_a_first_load_counts_the_ids_repeated_across_its_files(con, landing):
    """The first load's files have no earlier rows to look their ids up in; an id in two of
    them still counts once for each row after its first."""
    write_events(landing / "events" / "a.jsonl", [event("m1"), event("m2"), event("m2")])
    write_events(landing / "events" / "b.jsonl", [event("m2"), event("m3")])
    write_events(landing / "events" / "c.jsonl", [event("m1"), event("m4")])

    report = load_landing(con, landing)

    assert report.repeated_message_ids == 3  # m2 twice more, m1 once more
    assert rows(con, "SELECT count(*) FROM raw.events") == [(7,)]


def test_landing_files_lists_the_exports_only(landing):
    write(landing / "crm" / "contacts.csv", "Record ID\n1\n")
    write(landing / "crm" / "notes.txt", "x")
    write_events(landing / "events" / "a.jsonl.gz", [event("m1")])

    assert [p.name for p in loading.landing_files(landing)] == ["contacts.csv", "a.jsonl.gz"]
    assert loading.landing_files(landing / "missing") == []
