"""The synthetic data generator (seeds/generator.py): layout, determinism, ground truth, plants."""

import csv
import itertools
import json
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from seeds.generator import GenerateReport, generate

END = datetime(2026, 11, 15, tzinfo=UTC)
PEOPLE = 300
MESSAGE_TYPES = {"identify", "track", "page", "screen", "alias", "group"}
JUNK = {
    ("email", "test@test.com"),
    ("email", "unknown"),
    ("email", "null"),
    ("phone", "+00000000"),  # "0000000000": the 00 prefix reads as international
    ("phone", "+11234567890"),
    ("anonymous_id", "undefined"),
    ("anonymous_id", "null"),
}


def norm_email(value: str) -> str:
    return value.strip().lower()


def norm_phone(value: str) -> str:
    raw = value.strip()
    digits = "".join(c for c in raw if c.isdigit())
    if raw.startswith("+"):
        return "+" + digits
    if digits.startswith("00"):
        return "+" + digits[2:]
    if len(digits) == 11 and digits.startswith("1"):
        return "+" + digits
    return "+1" + digits


def parse_time(value) -> datetime | None:
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None


def valid_message(msg) -> bool:
    """What the loader accepts (docs/architecture.md, raw.events)."""
    return (
        isinstance(msg, dict)
        and msg.get("type") in MESSAGE_TYPES
        and bool(msg.get("messageId"))
        and parse_time(msg.get("timestamp")) is not None
        and bool(msg.get("userId") or msg.get("anonymousId"))
        and (msg["type"] != "track" or bool(msg.get("event")))
        and (msg["type"] != "alias" or bool(msg.get("previousId") and msg.get("userId")))
    )


class Output:
    """A generated directory, parsed into well-formed rows, malformed rows and truth."""

    def __init__(self, out: Path, report: GenerateReport, **kwargs) -> None:
        self.out = out
        self.report = report
        self.kwargs = kwargs  # generate()'s keyword arguments beyond the defaults of run()
        self.messages: list[dict] = []
        self.bad_event_lines: list[str] = []
        for path in sorted((out / "events").glob("*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    msg = json.loads(line)
                except json.JSONDecodeError:
                    msg = None
                if valid_message(msg):
                    self.messages.append(msg)
                else:
                    self.bad_event_lines.append(line)
        self.csv: dict[str, list[dict]] = {}
        self.bad_contacts: list[list[str]] = []
        for kind in ("contacts", "companies", "deals", "tickets"):
            with (out / "crm" / f"{kind}.csv").open(encoding="utf-8", newline="") as f:
                rows = list(csv.reader(f))
            header, good = rows[0], []
            for row in rows[1:]:
                if len(row) == len(header) and row[0]:
                    good.append(dict(zip(header, row, strict=True)))
                elif kind == "contacts":
                    self.bad_contacts.append(row)
            self.csv[kind] = good
        with (out / "truth.csv").open(encoding="utf-8", newline="") as f:
            self.truth = list(csv.DictReader(f))
        self.persons: dict[tuple[str, str], set[str]] = defaultdict(set)
        for row in self.truth:
            self.persons[(row["identifier_type"], row["identifier_value"])].add(row["person_id"])

    def identifiers(self, msg_or_contact: dict) -> set[tuple[str, str]]:
        found = set()
        if "Record ID" in msg_or_contact:
            row = msg_or_contact
            found.add(("crm_contact_id", row["Record ID"]))
            if norm_email(row["Email"]):
                found.add(("email", norm_email(row["Email"])))
            if row["Phone Number"].strip():
                found.add(("phone", norm_phone(row["Phone Number"])))
            return found
        msg = msg_or_contact
        for field, kind in (("userId", "user_id"), ("anonymousId", "anonymous_id")):
            if msg.get(field):
                found.add((kind, msg[field]))
        if msg.get("previousId"):
            found.add(("anonymous_id", msg["previousId"]))
        traits = msg.get("traits") or {}
        if traits.get("email"):
            found.add(("email", norm_email(traits["email"])))
        if traits.get("phone"):
            found.add(("phone", norm_phone(traits["phone"])))
        return found

    def all_identifiers(self) -> set[tuple[str, str]]:
        found = set()
        for row in self.csv["contacts"]:
            found |= self.identifiers(row)
        for msg in self.messages:
            found |= self.identifiers(msg)
        return found

    def user(self, msg: dict) -> str:
        """The person a signed-in message's userId belongs to."""
        (person,) = self.persons[("user_id", msg["userId"])]
        return person

    def person_of(self, record: dict) -> set[str]:
        """The people a record's non-junk identifiers belong to."""
        people = set()
        for key in self.identifiers(record):
            if key not in JUNK:
                people |= self.persons[key] - {""}
        return people

    def file_bytes(self) -> dict[str, bytes]:
        return {
            str(p.relative_to(self.out)): p.read_bytes()
            for p in sorted(self.out.rglob("*"))
            if p.is_file()
        }


def run(out: Path, customers: int = PEOPLE, seed: int = 7, **kwargs) -> Output:
    return Output(out, generate(customers, seed, out, end=END, **kwargs), **kwargs)


# Every test of `data` runs on a run of one part and on a run cut into three parts of 100
# people (made by two worker processes), which must plant the same cases.
@pytest.fixture(
    scope="module", params=[{}, {"part_people": 100, "workers": 2}], ids=["1part", "3parts"]
)
def data(request, tmp_path_factory) -> Output:
    return run(tmp_path_factory.mktemp("gen") / "out", **request.param)


def test_the_same_seed_and_end_give_byte_identical_files(data, tmp_path):
    again = run(tmp_path / "again", **data.kwargs)
    assert again.file_bytes() == data.file_bytes()
    assert again.report == data.report


def test_a_different_seed_gives_different_files(data, tmp_path):
    other = run(tmp_path / "other", seed=8)
    assert other.file_bytes()["crm/contacts.csv"] != data.file_bytes()["crm/contacts.csv"]
    assert other.file_bytes()["truth.csv"] != data.file_bytes()["truth.csv"]


def test_the_layout_has_hubspot_headers_and_monthly_event_files(data):
    headers = {
        kind: (data.out / "crm" / f"{kind}.csv").read_text(encoding="utf-8").splitlines()[0]
        for kind in ("contacts", "companies", "deals", "tickets")
    }
    assert headers["contacts"] == (
        "Record ID,First Name,Last Name,Email,Phone Number,Company Name,Associated Company ID,"
        "Lifecycle Stage,Lead Status,Create Date,Last Activity Date,Unsubscribed from all email,"
        "City,Country/Region"
    )
    assert headers["companies"].startswith("Record ID,Company name,Company Domain Name")
    assert headers["deals"].startswith("Record ID,Deal Name,Deal Stage,Pipeline,Amount")
    assert headers["tickets"].startswith("Record ID,Ticket name,Ticket status,Priority")
    names = sorted(p.name for p in (data.out / "events").iterdir())
    if data.kwargs:
        parts = ("-part001", "-part002", "-part003")
        assert names == [f"events-2026-{m:02d}{part}.jsonl" for m in range(7, 12) for part in parts]
    else:
        assert names == [f"events-2026-{m:02d}.jsonl" for m in range(7, 12)]
    assert not list(data.out.glob(".*")), "no part files are left behind"
    assert (
        (data.out / "truth.csv")
        .read_text()
        .startswith("person_id,identifier_type,identifier_value\n")
    )


def test_the_report_counts_what_was_written(data):
    report = data.report
    assert report.people == PEOPLE
    assert report.contacts == len(data.csv["contacts"])
    assert report.companies == len(data.csv["companies"])
    assert report.deals == len(data.csv["deals"])
    assert report.tickets == len(data.csv["tickets"])
    assert report.events == len(data.messages)
    assert report.identifiers == len(data.truth)


def test_record_ids_are_numeric_and_in_a_distinct_range_per_object_type(data):
    ranges = {}
    for kind, rows in data.csv.items():
        ids = [int(row["Record ID"]) for row in rows]
        assert len(ids) == len(set(ids))
        ranges[kind] = (min(ids), max(ids))
    spans = sorted(ranges.values())
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))
    contact_ids = {row["Record ID"] for row in data.csv["contacts"]}
    company_ids = {row["Record ID"] for row in data.csv["companies"]}
    for row in data.csv["contacts"]:
        assert row["Associated Company ID"] in company_ids | {""}
    for row in data.csv["deals"] + data.csv["tickets"]:
        assert set(row["Associated Contact IDs"].split(";")) <= contact_ids


def test_crm_values_follow_hubspot_conventions(data):
    date = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$")
    stages = {
        "subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity",
        "customer", "evangelist",
    }  # fmt: skip
    for row in data.csv["contacts"]:
        assert row["Lifecycle Stage"] in stages
        assert row["Unsubscribed from all email"] in {"true", "false", ""}
        assert date.match(row["Create Date"])
        assert row["Last Activity Date"] == "" or date.match(row["Last Activity Date"])
    deal_stages = {row["Deal Stage"] for row in data.csv["deals"]}
    assert {"closedwon", "closedlost"} <= deal_stages
    assert deal_stages - {"closedwon", "closedlost"}
    statuses = {row["Ticket status"] for row in data.csv["tickets"]}
    assert "Closed" in statuses and statuses - {"Closed"}


def test_every_identifier_in_the_output_is_in_truth_and_every_truth_row_is_in_the_output(data):
    in_output = data.all_identifiers()
    in_truth = set(data.persons)
    assert in_output == in_truth


def test_truth_values_are_normalized_and_person_ids_look_like_p000001(data):
    for row in data.truth:
        kind, value = row["identifier_type"], row["identifier_value"]
        assert kind in {"email", "phone", "user_id", "anonymous_id", "crm_contact_id"}
        assert row["person_id"] == "" or re.fullmatch(r"p\d{6}", row["person_id"])
        if kind == "email":
            assert value == value.strip().lower()
        if kind == "phone":
            assert re.fullmatch(r"\+\d{8,15}", value)
            if value.startswith("+1") and (kind, value) not in JUNK:
                assert len(value) == 12
        if kind == "user_id":
            assert re.fullmatch(r"u_[0-9a-f]{12}", value)
    rows = [(r["person_id"], r["identifier_type"], r["identifier_value"]) for r in data.truth]
    assert len(rows) == len(set(rows))


def test_only_shared_devices_and_junk_values_belong_to_more_than_one_person(data):
    shared = {key for key, people in data.persons.items() if len(people) > 1}
    assert shared
    assert all(kind == "anonymous_id" for kind, _ in shared)


def test_events_are_segment_messages_within_the_120_days_before_end(data):
    types = {msg["type"] for msg in data.messages}
    assert {"identify", "track", "page", "alias"} <= types
    start = END - timedelta(days=120)
    for msg in data.messages:
        assert start <= parse_time(msg["timestamp"]) < END
        assert parse_time(msg["receivedAt"]) >= parse_time(msg["timestamp"])
        assert parse_time(msg["sentAt"]) is not None
        assert "library" in msg["context"]
    offsets = [m for m in data.messages if m["timestamp"].endswith("+02:00")]
    assert offsets
    assert all(m["timestamp"].endswith("Z") for m in data.messages if m not in offsets)


def test_ecommerce_events_follow_the_segment_spec(data):
    events = defaultdict(list)
    for msg in data.messages:
        if msg["type"] == "track":
            events[msg["event"]].append(msg["properties"])
    assert {"Product Viewed", "Product Added", "Checkout Started", "Order Completed"} <= set(events)
    for props in events["Product Added"]:
        assert {"product_id", "sku", "name", "price", "quantity", "category"} <= set(props)
    totals = []
    for props in events["Order Completed"]:
        assert {"order_id", "revenue", "total", "currency", "products"} <= set(props)
        assert props["products"]
        totals.append(props["revenue"])
    typical = [t for t in totals if 20 <= t <= 300]
    assert len(typical) > 0.7 * len(totals)


def orders_by_person(data: Output) -> dict[str, dict[str, float]]:
    orders = defaultdict(dict)
    for msg in data.messages:
        if msg.get("event") == "Order Completed":
            orders[data.user(msg)][msg["properties"]["order_id"]] = msg["properties"]["revenue"]
    return orders


def test_some_customers_order_several_times_and_reach_500_dollars(data):
    orders = orders_by_person(data)
    assert any(len(o) >= 3 for o in orders.values())
    high_value = [p for p, o in orders.items() if sum(o.values()) >= 500]
    assert high_value
    assert data.report.planted["lifetime_revenue_500_plus"] == len(high_value)


def test_some_signed_up_people_abandoned_a_cart_in_the_last_7_days(data):
    since = END - timedelta(days=7)
    last_cart, last_order = {}, defaultdict(lambda: datetime.min.replace(tzinfo=UTC))
    for msg in data.messages:
        if msg["type"] != "track" or not msg.get("userId"):
            continue
        person = data.user(msg)
        at = parse_time(msg["timestamp"])
        if msg["event"] in ("Product Added", "Checkout Started") and at >= since:
            last_cart[person] = max(at, last_cart.get(person, at))
        elif msg["event"] == "Order Completed":
            last_order[person] = max(at, last_order[person])
    abandoners = [p for p, at in last_cart.items() if last_order[p] < at]
    assert abandoners
    assert data.report.planted["cart_abandoners"] == len(abandoners)


def test_newsletter_people_identify_with_only_an_email_and_never_order(data):
    newsletter = [
        m
        for m in data.messages
        if m["type"] == "identify" and not m.get("userId") and set(m["traits"]) == {"email"}
    ]
    assert newsletter
    buyers = set(orders_by_person(data))
    people = {p for m in newsletter for p in data.person_of(m)}
    assert people and not people & buyers
    assert data.report.planted["newsletter_only"] == len(people)


def test_email_case_and_whitespace_variants_appear_for_one_address(data):
    forms = defaultdict(set)
    for row in data.csv["contacts"]:
        if row["Email"].strip():
            forms[norm_email(row["Email"])].add(row["Email"])
    for msg in data.messages:
        if (msg.get("traits") or {}).get("email") and msg["type"] == "identify":
            forms[norm_email(msg["traits"]["email"])].add(msg["traits"]["email"])
    variants = [f for f in forms.values() if len(f) > 1]
    assert variants
    assert any(any(v != v.strip() for v in f) for f in variants)
    assert any(any(v != v.lower() for v in f) for f in variants)


def test_phone_format_variants_appear_for_one_number(data):
    forms = defaultdict(set)
    for row in data.csv["contacts"]:
        if row["Phone Number"].strip():
            forms[norm_phone(row["Phone Number"])].add(row["Phone Number"])
    for msg in data.messages:
        if (msg.get("traits") or {}).get("phone"):
            forms[norm_phone(msg["traits"]["phone"])].add(msg["traits"]["phone"])
    assert any(len(f) > 1 for f in forms.values())
    seen = {v for f in forms.values() for v in f}
    assert any(re.fullmatch(r"\(\d{3}\) \d{3}-\d{4}", v) for v in seen)
    assert any(re.fullmatch(r"\+1\d{10}", v) for v in seen)
    assert any(re.fullmatch(r"\d{10}", v) for v in seen if v not in {"0000000000", "1234567890"})
    assert any(v.startswith(("+44", "0044")) for v in seen)


def test_people_browse_anonymously_before_signing_up_on_the_same_device(data):
    signup_anon = {
        m["anonymousId"]: parse_time(m["timestamp"])
        for m in data.messages
        if m.get("event") == "Signed Up"
    }
    earlier = {
        m["anonymousId"]
        for m in data.messages
        if not m.get("userId")
        and m.get("anonymousId") in signup_anon
        and parse_time(m["timestamp"]) < signup_anon[m["anonymousId"]] - timedelta(hours=1)
    }
    assert earlier


def test_people_use_several_devices_and_some_a_new_anonymous_id_per_visit(data):
    anon_count = defaultdict(int)
    for row in data.truth:
        if row["identifier_type"] == "anonymous_id" and row["person_id"]:
            anon_count[row["person_id"]] += 1
    assert sum(1 for n in anon_count.values() if n >= 2) > PEOPLE // 5
    # More anonymous ids than the three devices anyone has: a new id on every visit.
    assert max(anon_count.values()) > 3
    assert data.report.planted["new_anonymous_id_per_visit"] > 0


def test_alias_calls_link_an_anonymous_id_to_a_user_id(data):
    aliases = [m for m in data.messages if m["type"] == "alias"]
    assert aliases
    for msg in aliases:
        assert (
            data.persons[("anonymous_id", msg["previousId"])]
            == data.persons[("user_id", msg["userId"])]
        )


def test_some_people_have_two_crm_contacts(data):
    contacts = defaultdict(set)
    for row in data.truth:
        if row["identifier_type"] == "crm_contact_id":
            contacts[row["person_id"]].add(row["identifier_value"])
    doubles = [p for p, ids in contacts.items() if len(ids) > 1]
    assert doubles
    assert data.report.planted["duplicate_crm_contacts"] == len(doubles)


def test_a_shared_device_is_signed_into_by_two_people_with_their_own_emails(data):
    shared = [
        value
        for (kind, value), people in data.persons.items()
        if kind == "anonymous_id" and len(people) == 2
    ]
    assert shared
    for anon in shared:
        identifies = [
            m for m in data.messages if m["type"] == "identify" and m["anonymousId"] == anon
        ]
        assert len({m["userId"] for m in identifies}) == 2
        emails = {norm_email(m["traits"]["email"]) for m in identifies}
        assert len(emails) == 2
        assert {p for e in emails for p in data.persons[("email", e)]} == data.persons[
            ("anonymous_id", anon)
        ]


def junk_users(data: Output) -> dict[tuple[str, str], set[str]]:
    users = defaultdict(set)
    for record in data.csv["contacts"] + data.messages:
        for key in data.identifiers(record) & JUNK:
            users[key] |= data.person_of(record)
    return users


def test_junk_identifiers_have_no_person_and_are_each_used_by_at_least_five_people(data):
    junk_rows = {
        (r["identifier_type"], r["identifier_value"]) for r in data.truth if not r["person_id"]
    }
    assert junk_rows == JUNK
    assert all(data.persons[key] == {""} for key in JUNK)
    users = junk_users(data)
    assert set(users) == JUNK
    assert all(len(people) >= 5 for people in users.values())
    empty_email = [r for r in data.csv["contacts"] if r["Email"] == ""]
    assert empty_email


def test_junk_identifiers_are_used_by_five_people_even_among_fifty(tmp_path):
    small = run(tmp_path / "small", customers=50)
    users = junk_users(small)
    assert set(users) == JUNK
    assert all(len(people) >= 5 for people in users.values())


def test_anonymous_id_junk_rides_on_messages_that_have_a_user_id(data):
    junk_anon = [m for m in data.messages if m.get("anonymousId") in {"undefined", "null"}]
    assert junk_anon and all(m.get("userId") for m in junk_anon)


def test_people_who_change_email_keep_both_addresses(data):
    emails = defaultdict(set)
    for row in data.truth:
        if row["identifier_type"] == "email" and row["person_id"]:
            emails[row["person_id"]].add(row["identifier_value"])
    changed = [p for p, e in emails.items() if len(e) == 2]
    assert changed
    assert data.report.planted["email_change"] == len(changed)


def test_different_people_share_a_first_and_last_name(data):
    people_by_name = defaultdict(set)
    for row in data.csv["contacts"]:
        people_by_name[(row["First Name"], row["Last Name"])] |= data.person_of(row)
    for msg in data.messages:
        traits = msg.get("traits") or {}
        if "firstName" in traits:
            people_by_name[(traits["firstName"], traits["lastName"])] |= data.person_of(msg)
    assert any(len(people) > 1 for people in people_by_name.values())


def person_timelines(data: Output) -> dict[str, list[tuple[datetime, dict]]]:
    """Each person's messages in time order (messages of a shared device are left out)."""
    timelines = defaultdict(list)
    for msg in data.messages:
        people = data.person_of(msg)
        if len(people) == 1:
            timelines[people.pop()].append((parse_time(msg["timestamp"]), msg))
    for timeline in timelines.values():
        timeline.sort(key=lambda item: item[0])
    return timelines


def test_people_who_look_at_products_order_more_often_in_the_next_30_days(data):
    """The purchase intent the propensity model learns: at any cutoff, people who viewed two
    or more products in the 14 days before it order far more often in the 30 days after than
    people who were active but viewed none."""
    timelines = person_timelines(data)
    viewers, others = [0, 0], [0, 0]  # [people, of whom ordered]
    for days_back in (30, 45, 60):
        cutoff = END - timedelta(days=days_back)
        for timeline in timelines.values():
            if timeline[0][0] > cutoff:
                continue
            recent_views = sum(
                1
                for at, msg in timeline
                if cutoff - timedelta(days=14) < at <= cutoff
                and msg.get("event") == "Product Viewed"
            )
            ordered = any(
                cutoff < at <= cutoff + timedelta(days=30) and msg.get("event") == "Order Completed"
                for at, msg in timeline
            )
            group = viewers if recent_views >= 2 else others if recent_views == 0 else None
            if group is not None:
                group[0] += 1
                group[1] += ordered
    viewer_rate, other_rate = viewers[1] / viewers[0], others[1] / others[0]
    assert viewers[0] >= 30 and others[0] >= 100
    assert viewer_rate > 2 * other_rate, (viewer_rate, other_rate)


def test_orders_after_sign_up_follow_signed_in_product_views_in_the_days_before(data):
    researched = set()
    for person, timeline in person_timelines(data).items():
        orders = [at for at, msg in timeline if msg.get("event") == "Order Completed"]
        views = [
            at for at, msg in timeline if msg.get("event") == "Product Viewed" and msg.get("userId")
        ]
        for order_at in orders:
            before = [v for v in views if order_at - timedelta(days=14) <= v <= order_at]
            if sum(v <= order_at - timedelta(hours=23) for v in before) >= 2:
                researched.add(person)
    assert data.report.planted["research_before_order"] > 0
    assert len(researched) >= data.report.planted["research_before_order"]


def test_some_people_opt_in_to_sms_and_some_of_them_reply_stop_later(data):
    opted_in, opted_out = {}, {}
    for msg in data.messages:
        if msg.get("event") == "SMS Subscribed":
            opted_in[data.user(msg)] = parse_time(msg["timestamp"])
        elif msg.get("event") == "SMS Unsubscribed":
            opted_out[data.user(msg)] = parse_time(msg["timestamp"])
    assert data.report.planted["sms_opt_in"] == len(opted_in) > 0
    assert data.report.planted["sms_opt_out"] == len(opted_out) > 0
    assert all(person in opted_in and at >= opted_in[person] for person, at in opted_out.items())
    phones = {row["person_id"] for row in data.truth if row["identifier_type"] == "phone"}
    assert set(opted_in) <= phones


def test_duplicate_messages_repeat_a_message_id(data):
    counts = defaultdict(int)
    for msg in data.messages:
        counts[msg["messageId"]] += 1
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates > 0
    assert duplicates == data.report.planted["duplicate_messages"]


def test_malformed_rows_are_counted_and_carry_no_identifier_of_anyone(data):
    assert data.report.bad_rows == {"events": 10, "contacts": 3}
    assert len(data.bad_event_lines) == 10
    assert len(data.bad_contacts) == 3
    truth_values = {r["identifier_value"] for r in data.truth}
    for line in data.bad_event_lines:
        assert not any(value in line for value in truth_values if len(value) > 6)
    for row in data.bad_contacts:
        assert not set(row) & truth_values - {""}
    kinds = set()
    for line in data.bad_event_lines:
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            kinds.add("truncated")
            continue
        if "messageId" not in msg:
            kinds.add("no messageId")
        elif msg["timestamp"] == "not-a-date":
            kinds.add("bad timestamp")
        elif msg["type"] == "track" and "event" not in msg:
            kinds.add("track without event")
    assert kinds == {"truncated", "no messageId", "bad timestamp", "track without event"}


def test_no_malformed_rows_are_planted_when_bad_rows_is_zero(tmp_path):
    clean = run(tmp_path / "clean", customers=60, bad_rows=0)
    assert clean.report.bad_rows == {"events": 0, "contacts": 0}
    assert clean.bad_event_lines == [] and clean.bad_contacts == []


def test_every_planted_case_is_counted(data):
    planted = data.report.planted
    for case in (
        "email_case_variants", "phone_format_variants", "anonymous_browsing_before_signup",
        "multiple_devices", "alias_calls", "duplicate_crm_contacts", "shared_device",
        "junk_identifiers", "email_change", "same_name", "duplicate_messages",
        "research_before_order", "sms_opt_in", "sms_opt_out",
    ):  # fmt: skip
        assert planted[case] > 0, case
    assert planted["shared_device"] % 2 == 0


def test_tiny_runs_work_and_report_progress(tmp_path):
    messages = []
    for n in (0, 1, 5):
        report = generate(n, 1, tmp_path / str(n), end=END, progress=messages.append)
        assert report.people == n
        assert (tmp_path / str(n) / "truth.csv").exists()
    assert messages and messages[-1].startswith("wrote ")


def test_a_naive_end_is_read_as_utc(tmp_path):
    naive = generate(20, 3, tmp_path / "naive", end=END.replace(tzinfo=None), bad_rows=0)
    aware = generate(20, 3, tmp_path / "aware", end=END, bad_rows=0)
    assert naive == aware
    for name in ("truth.csv", "crm/contacts.csv"):
        assert (tmp_path / "naive" / name).read_bytes() == (tmp_path / "aware" / name).read_bytes()


# --------------------------------------------------------------------------- parts and workers


def test_the_output_does_not_depend_on_the_number_of_workers(tmp_path):
    one = run(tmp_path / "one", customers=250, part_people=60, workers=1)
    two = run(tmp_path / "two", customers=250, part_people=60, workers=2)
    assert one.file_bytes() == two.file_bytes()
    assert one.report == two.report
    assert len(list((one.out / "events").iterdir())) == 5 * 5


def test_parts_cover_every_person_once_with_disjoint_ids(tmp_path):
    cut = run(tmp_path / "cut", customers=250, part_people=60, workers=2)
    people = {row["person_id"] for row in cut.truth if row["person_id"]}
    assert people == {f"p{i:06d}" for i in range(1, 251)}
    # Five parts of 50 people: part k makes people k*50+1 .. k*50+50, whole (shared devices
    # included), and writes their messages to its own files.
    seen = set()
    for path in (cut.out / "events").glob("*.jsonl"):
        part = int(path.stem[-3:]) - 1
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue
            if valid_message(msg):
                for person in cut.person_of(msg):
                    assert (int(person[1:]) - 1) // 50 == part, (person, path.name)
                    seen.add(person)
    assert seen == people
    assert cut.report.planted["shared_device"] > 0
    # Record IDs and order ids of different parts never collide.
    ids = [row["Record ID"] for rows in cut.csv.values() for row in rows]
    assert len(ids) == len(set(ids))
    owners = defaultdict(set)
    for msg in cut.messages:
        if msg.get("event") == "Order Completed":
            owners[msg["properties"]["order_id"]].add(cut.user(msg))
    assert owners and all(len(users) == 1 for users in owners.values())


def test_a_smaller_run_replaces_the_part_files_of_a_larger_one(tmp_path):
    out = tmp_path / "out"
    generate(120, 1, out, end=END, part_people=50, workers=1)
    assert len(list((out / "events").iterdir())) == 3 * 5
    generate(40, 1, out, end=END, part_people=50)
    assert sorted(p.name for p in (out / "events").iterdir()) == [
        f"events-2026-{m:02d}.jsonl" for m in range(7, 12)
    ]
