"""Event JSON Lines as the SDKs and their exports write them, parsed in DuckDB SQL."""

import gzip
import hashlib
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from orchestration.loading import events as events_module
from orchestration.loading import landing as landing_module
from orchestration.loading import load_landing
from orchestration.warehouse import connect
from tests.conftest import event, rows


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    (tmp_path / "landing" / "events").mkdir(parents=True)
    return tmp_path / "landing"


def write_lines(path: Path, lines: list, ending: str = "\n") -> Path:
    text = ending.join(x if isinstance(x, str) else json.dumps(x) for x in lines) + ending
    data = text.encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_event_time_is_corrected_for_the_device_clock_as_segment_does(con, landing):
    write_lines(
        landing / "events" / "sdk.jsonl",
        [
            {  # device clock 1 hour behind: sent at 09:00:05 by its clock, received 10:00:06
                "type": "track",
                "event": "Order Completed",
                "messageId": "skewed",
                "anonymousId": "a1",
                "originalTimestamp": "2026-03-01T09:00:00Z",
                "sentAt": "2026-03-01T09:00:05Z",
                "receivedAt": "2026-03-01T10:00:06Z",
            },
            {  # a Segment warehouse export: timestamp already corrected, snake_case names
                "type": "page",
                "message_id": "export",
                "anonymous_id": "a2",
                "original_timestamp": "2026-03-01T11:59:00+02:00",
                "sent_at": "2026-03-01T10:00:00.5Z",
                "received_at": "2026-03-01T10:00:01.5Z",
                "timestamp": "2026-03-01T09:59:01Z",
            },
            {  # without sentAt there is nothing to correct with: timestamp wins
                "type": "page",
                "messageId": "no-sent-at",
                "anonymousId": "a3",
                "timestamp": "2026-03-01T08:00:00Z",
                "originalTimestamp": "2026-03-01T07:00:00Z",
                "receivedAt": "2026-03-01T08:00:01Z",
            },
            {  # only receivedAt
                "type": "page",
                "messageId": "received-only",
                "anonymousId": "a4",
                "receivedAt": "2026-03-01 12:00:00",
            },
        ],
    )

    load_landing(con, landing)

    assert rows(
        con,
        "SELECT message_id, event_at, original_at, sent_at, received_at FROM raw.events "
        "ORDER BY _source_line",
    ) == [
        (
            "skewed",
            at("2026-03-01T10:00:01Z"),
            at("2026-03-01T09:00:00Z"),
            at("2026-03-01T09:00:05Z"),
            at("2026-03-01T10:00:06Z"),
        ),
        (
            "export",
            at("2026-03-01T09:59:01Z"),
            at("2026-03-01T09:59:00Z"),
            at("2026-03-01T10:00:00.5Z"),
            at("2026-03-01T10:00:01.5Z"),
        ),
        (
            "no-sent-at",
            at("2026-03-01T08:00:00Z"),
            at("2026-03-01T07:00:00Z"),
            None,
            at("2026-03-01T08:00:01Z"),
        ),  # fmt: skip
        ("received-only", at("2026-03-01T12:00:00Z"), None, None, at("2026-03-01T12:00:00Z")),
    ]


def test_wrong_types_are_rejected_with_the_field_and_what_was_found(con, landing):
    base = {"type": "track", "event": "x", "anonymousId": "a", "timestamp": "2026-03-01T10:00:00Z"}
    write_lines(
        landing / "events" / "types.jsonl",
        [
            {**base, "messageId": "ok-number-id", "userId": 42},  # 1: numbers are fine
            {**base, "messageId": {"id": 1}},  # 2
            {**base, "messageId": "m3", "userId": True},  # 3
            {**base, "messageId": "m4", "event": ["a"]},  # 4
            {**base, "messageId": "m5", "properties": "free shipping"},  # 5
            {**base, "messageId": "m6", "timestamp": 1772359200},  # 6: epoch seconds
            {**base, "messageId": "m7", "type": 5},  # 7
            {**base, "messageId": "m8", "userId": "true"},  # 8: a string, however odd
            {**base, "messageId": "m9", "traits": [], "properties": []},  # 9: PHP's empty objects
        ],
    )

    report = load_landing(con, landing)

    assert rows(con, "SELECT source_line, reason FROM raw.rejected_rows ORDER BY 1") == [
        (2, "invalid 'messageId': expected a string, found an object"),
        (3, "invalid 'userId': expected a string, found a boolean"),
        (4, "invalid 'event': expected a string, found an array"),
        (5, "invalid 'properties': expected an object, found a string"),
        (6, "unparseable timestamp in 'timestamp': '1772359200'"),
        (7, "unknown message type '5'"),
    ]
    assert rows(
        con, "SELECT message_id, user_id, traits, properties FROM raw.events ORDER BY 1"
    ) == [("m8", "true", None, None), ("m9", None, None, None), ("ok-number-id", "42", None, None)]
    assert (report.rows_read, report.rows_loaded, report.rows_rejected) == (9, 3, 6)


def test_lines_that_are_not_utf8_or_not_strict_json_are_rejected_with_their_text(con, landing):
    good = json.dumps(
        {"type": "page", "messageId": "m1", "anonymousId": "a", "timestamp": "2026-03-01"}
    )
    (landing / "events" / "mixed.jsonl").write_bytes(
        b"\xef\xbb\xbf"  # a BOM before the first line
        + good.encode()
        + b"\r\n"
        + b'{"type": "page", "name": "Caf\xe9"}\r\n'  # Latin-1 inside a UTF-8 file
        + b'{"type": "page", "messageId": "m3", "anonymousId": "a",\r\n'  # truncated
        + b'{"type": "page", "messageId": "m4", "anonymousId": "a", "timestamp": "2026-03-01",'
        + b' "properties": {"price": Infinity}}\r\n'
        + b"\r\n"  # blank: neither read nor rejected
        + good.replace("m1", "m6").replace('"name"', '"NaNa"').encode()  # last line, no newline
    )

    report = load_landing(con, landing)

    rejected = rows(con, "SELECT source_line, reason, raw_text FROM raw.rejected_rows ORDER BY 1")
    assert [line for line, _reason, _text in rejected] == [2, 3, 4]
    assert rejected[0][1] == "invalid JSON: not UTF-8 (invalid continuation byte at byte 29)"
    assert rejected[0][2] == '{"type": "page", "name": "Caf\ufffd"}'
    assert rejected[1][1] == "invalid JSON: unexpected end of data: line 1 column 56 (char 55)"
    assert rejected[1][2] == '{"type": "page", "messageId": "m3", "anonymousId": "a",'
    assert rejected[2][1].startswith("invalid JSON: ")  # Infinity is not JSON
    assert rows(con, "SELECT message_id, _source_line FROM raw.events ORDER BY 2") == [
        ("m1", 1),
        ("m6", 6),
    ]
    assert (report.rows_read, report.rows_loaded, report.rows_rejected) == (5, 2, 3)


def many_events(count: int) -> list[str]:
    lines = []
    for n in range(count):
        message = {
            "type": "track" if n % 3 else "identify",
            "event": "Product Added",
            "messageId": f"m{n}",
            "userId": f"u{n % 50}",
            "timestamp": (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n)).isoformat(),
            "traits": {"email": f"p{n}@example.com"} if n % 3 == 0 else {},
            "properties": {"sku": f"s{n}", "note": "x" * (n % 200 if n % 250 else 9000)},
        }
        lines.append("" if n % 97 == 5 else "{broken" if n % 101 == 7 else json.dumps(message))
    return lines


@pytest.mark.parametrize("name", ["big.jsonl", "big.jsonl.gz"])
def test_small_blocks_give_the_same_rows_and_line_numbers_as_one_block(tmp_path, monkeypatch, name):
    def load(block_bytes: int) -> tuple[list[tuple], list[tuple]]:
        landing = tmp_path / f"landing-{block_bytes}"
        (landing / "events").mkdir(parents=True)
        write_lines(landing / "events" / name, many_events(400))
        monkeypatch.setattr(events_module, "BLOCK_BYTES", block_bytes)
        with duckdb.connect(str(tmp_path / f"w-{block_bytes}.duckdb")) as con:
            load_landing(con, landing)
            loaded = rows(
                con,
                "SELECT message_id, _source_line, traits::VARCHAR, properties->>'sku', event_at "
                "FROM raw.events ORDER BY _source_line",
            )
            rejected = rows(
                con, "SELECT source_line, raw_text FROM raw.rejected_rows ORDER BY source_line"
            )
        return loaded, rejected

    whole = load(1 << 30)
    blocked = load(16_384)
    tiny = load(4_096)  # some lines are longer than a block: they span several reads

    assert blocked == whole
    assert tiny == whole
    loaded, rejected = whole
    blank = {n for n in range(400) if n % 97 == 5}
    broken = {n for n in range(400) if n % 101 == 7} - blank
    assert [line for line, _text in rejected] == sorted(n + 1 for n in broken)
    assert len(loaded) == 400 - len(blank) - len(broken)
    assert loaded[0][:4] == ("m0", 1, '{"email":"p0@example.com"}', "s0")
    assert loaded[1][2] is None  # {} traits: none


def test_a_long_file_reports_a_progress_bar(con, landing, monkeypatch):
    big = write_lines(landing / "events" / "big.jsonl", many_events(400))
    monkeypatch.setattr(events_module, "BLOCK_BYTES", 16_384)
    monkeypatch.setattr(landing_module, "PROGRESS_SECONDS", 0.0)
    lines: list[str] = []
    threads: set[str] = set()

    def say(line: str) -> None:
        lines.append(line)
        threads.add(threading.current_thread().name)

    load_landing(con, landing, progress=say)

    bars = [line for line in lines if line.startswith("events/big.jsonl [")]
    assert len(bars) >= 5
    # The file loads on a thread of its own; its lines are said on the caller's thread
    # (a Dagster step's log is written from the step's thread).
    assert threads == {threading.current_thread().name}
    size = f"{big.stat().st_size / 1e6:.1f} MB"
    assert bars[-1].startswith(f"events/big.jsonl [####################] 100% of {size}")
    assert lines[-1].startswith("events/big.jsonl: ")


def test_a_new_file_is_hashed_while_it_loads_and_a_copy_found_then_loads_nothing(con, landing):
    lines = many_events(300)
    plain = write_lines(landing / "events" / "a.jsonl", lines)
    packed = write_lines(landing / "events" / "b.jsonl.gz", lines)
    (landing / "events" / "c.jsonl").write_bytes(plain.read_bytes())  # a copy of a.jsonl

    first = load_landing(con, landing)

    assert [(f.path.name, f.status) for f in first.files] == [
        ("a.jsonl", "loaded"),
        ("b.jsonl.gz", "loaded"),
        ("c.jsonl", "duplicate"),
    ]
    assert first.files[2].duplicate_of == plain.resolve()
    plain_hash = hashlib.sha256(plain.read_bytes()).hexdigest()
    assert rows(
        con, "SELECT file_path, content_hash, rows_loaded FROM raw.loaded_files ORDER BY 1"
    ) == [
        (str(plain.resolve()), plain_hash, 293),  # 300 lines, 4 blank, 3 broken
        (str(packed.resolve()), hashlib.sha256(packed.read_bytes()).hexdigest(), 293),
        (str(plain.resolve().with_name("c.jsonl")), plain_hash, 0),
    ]
    assert rows(con, "SELECT _source_file, count(*) FROM raw.events GROUP BY 1 ORDER BY 1") == [
        (str(plain.resolve()), 293),
        (str(packed.resolve()), 293),
    ]
    assert rows(con, "SELECT count(DISTINCT source_file) FROM raw.rejected_rows") == [(2,)]

    again = load_landing(con, landing)

    assert [f.status for f in again.files] == ["unchanged"] * 3


def test_two_new_event_files_load_at_the_same_time_and_are_reported_in_order(
    tmp_path, landing, monkeypatch
):
    """b.jsonl starts loading while a.jsonl is still loading (a's load waits for b's to begin,
    so one file after another would stop here), and the report keeps the files' order. The
    connection is the pipeline's: the warehouse file attached to an in-memory database."""
    con = connect(tmp_path / "cdp.duckdb")
    b_started = threading.Event()
    load_events = landing_module.load_events

    def load_in_turn(cursor, path, *args):
        if path.name == "a.jsonl":
            assert b_started.wait(timeout=60), "b.jsonl did not start while a.jsonl loaded"
        else:
            b_started.set()
        return load_events(cursor, path, *args)

    monkeypatch.setattr(landing_module, "load_events", load_in_turn)
    for name in ("a", "b", "c"):
        write_lines(landing / "events" / f"{name}.jsonl", [event(f"{name}1")])

    report = load_landing(con, landing)

    assert [(f.path.name, f.status, f.rows_loaded) for f in report.files] == [
        ("a.jsonl", "loaded", 1),
        ("b.jsonl", "loaded", 1),
        ("c.jsonl", "loaded", 1),
    ]
    assert rows(con, "SELECT message_id FROM raw.events ORDER BY 1") == [("a1",), ("b1",), ("c1",)]


def test_a_file_that_fails_keeps_the_files_before_it_and_rolls_back_those_after_it(
    con, landing, monkeypatch
):
    """a.jsonl is committed; b.jsonl fails while c.jsonl loads beside it: neither has rows or
    a raw.loaded_files row, the database-wide settings are restored, and the next run loads
    both."""
    load_events = landing_module.load_events
    c_loaded = threading.Event()

    def failing_b(cursor, path, *args):
        if path.name == "b.jsonl":
            assert c_loaded.wait(timeout=60), "c.jsonl did not load while b.jsonl did"
            raise RuntimeError("the disk went away")
        counts = load_events(cursor, path, *args)
        if path.name == "c.jsonl":
            c_loaded.set()
        return counts

    monkeypatch.setattr(landing_module, "load_events", failing_b)
    for name in ("a", "b", "c"):
        write_lines(landing / "events" / f"{name}.jsonl", [event(f"{name}1")])
    order = rows(con, "SELECT current_setting('preserve_insertion_order')")

    with pytest.raises(RuntimeError, match="the disk went away"):
        load_landing(con, landing)

    assert rows(con, "SELECT message_id FROM raw.events") == [("a1",)]
    assert [Path(p).name for (p,) in rows(con, "SELECT file_path FROM raw.loaded_files")] == [
        "a.jsonl"
    ]
    assert rows(con, "SELECT current_setting('preserve_insertion_order')") == order
    monkeypatch.setattr(landing_module, "load_events", load_events)
    again = load_landing(con, landing)
    assert [(f.path.name, f.status) for f in again.files] == [
        ("a.jsonl", "unchanged"),
        ("b.jsonl", "loaded"),
        ("c.jsonl", "loaded"),
    ]
    assert rows(con, "SELECT message_id FROM raw.events ORDER BY 1") == [("a1",), ("b1",), ("c1",)]
