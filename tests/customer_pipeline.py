"""Two real `cdp run`s, with new data in between, shared by the customer, segment and report
tests (the session fixture `two_runs` in conftest.py).

The landing directory holds a generated data set plus a few hand-made people whose expected
golden record, consent, orders, merge and segment moves are known in advance:

- Ana: a CRM contact and identify calls that disagree on names, email and phone; consent
  that flips (CRM unsubscribed, then events opt in; SMS in, then STOP); two orders, one sent
  twice; an abandoned cart.
- Bo: never ordered, and the CRM says "Unsubscribed from all email" after an event opted in.
- Cy: browses anonymously, then signs up on another device; the second run brings the
  identify that ties the first device to the account (a merge).
- Dee: a newsletter subscriber who signs up and orders $900 in the second run (exits
  subscribers_never_purchased, enters high_value_customers).

The second run's events are later than the first run's, so the reference time moves and
time-window segments change too.
"""

import csv
import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from seeds.generator import CONTACT_HEADER, generate
from tests.conftest import run_cdp

PEOPLE = 1000
SEED = 11
END = datetime(2026, 11, 15, tzinfo=UTC)
DOMAIN = "crafted-mail.net"


@dataclass
class PipelineRun:
    published: Path  # a snapshot of the published warehouse after this run
    output: str


@dataclass
class TwoRuns:
    landing: Path
    warehouse: Path
    env: dict[str, str]
    first: PipelineRun
    second: PipelineRun


def message(kind: str, at: str, message_id: str, **fields) -> dict:
    return {"type": kind, "messageId": message_id, "timestamp": at, **fields}


def order(at: str, message_id: str, order_id: str, revenue: float, products: list[str], **ids):
    props = {
        "order_id": order_id,
        "revenue": revenue,
        "currency": "USD",
        "products": [{"name": name, "price": revenue / len(products)} for name in products],
    }
    return message("track", at, message_id, event="Order Completed", properties=props, **ids)


CRAFTED_CONTACTS = [
    {
        "Record ID": "990000001",
        "First Name": "Ana",
        "Last Name": "Crm",
        "Email": f"ana.golden@{DOMAIN}",
        "Phone Number": "(415) 555-0199",
        "Lifecycle Stage": "customer",
        "Create Date": "2026-08-01 10:00",
        "Last Activity Date": "2026-09-05 10:00",
        "Unsubscribed from all email": "true",
    },
    {
        "Record ID": "990000002",
        "First Name": "Bo",
        "Last Name": "Latest",
        "Email": f"bo.latest@{DOMAIN}",
        "Lifecycle Stage": "lead",
        "Create Date": "2026-07-01 09:00",
        "Last Activity Date": "2026-10-15 12:00",
        "Unsubscribed from all email": "true",
    },
]

ANA = {"userId": "u-ana-golden"}
FIRST_RUN_EVENTS = [
    # Ana: first an anonymous visit, then identify calls that disagree with the CRM.
    message("page", "2026-08-20T09:00:00Z", "t-ana-01", anonymousId="anon-ana", name="Home"),
    message(
        "identify",
        "2026-10-01T10:00:00Z",
        "t-ana-02",
        anonymousId="anon-ana",
        traits={
            "email": f"ana.golden@{DOMAIN}",
            "firstName": "Anita",
            "lastName": "Events",
            "phone": "+1 415 555 0188",
            "unsubscribed": False,
        },
        **ANA,
    ),
    message(
        "track", "2026-10-02T10:00:00Z", "t-ana-03", event="SMS Subscribed", properties={}, **ANA
    ),
    order("2026-10-05T10:00:00Z", "t-ana-04", "T-ORD-1", 120.0, ["Classic Tee", "Yoga Mat"], **ANA),
    order("2026-10-05T10:00:30Z", "t-ana-05", "T-ORD-1", 120.0, ["Classic Tee", "Yoga Mat"], **ANA),
    message(
        "track", "2026-10-10T10:00:00Z", "t-ana-06", event="SMS Unsubscribed", properties={}, **ANA
    ),
    message(
        "track",
        "2026-10-12T10:00:00Z",
        "t-ana-07",
        event="Product Added",
        properties={"name": "Rain Jacket"},
        **ANA,
    ),
    message(
        "track",
        "2026-10-20T10:00:00Z",
        "t-ana-08",
        event="Newsletter Subscribed",
        properties={},
        **ANA,
    ),
    message(
        "track",
        "2026-10-25T09:50:00Z",
        "t-ana-09",
        event="Product Added",
        properties={"name": "Ceramic Mug"},
        **ANA,
    ),
    order("2026-10-25T10:00:00Z", "t-ana-10", "T-ORD-2", 80.0, ["Ceramic Mug"], **ANA),
    message(
        "identify", "2026-11-01T10:00:00Z", "t-ana-11", traits={"email": f"ana.new@{DOMAIN}"}, **ANA
    ),
    # Bo: an event opts in before the CRM's later unsubscribe.
    message(
        "identify",
        "2026-10-01T08:00:00Z",
        "t-bo-01",
        userId="u-bo-latest",
        traits={"email": f"bo.latest@{DOMAIN}", "unsubscribed": False},
    ),
    # Cy: an anonymous device, and an account on another device.
    message("page", "2026-11-01T12:00:00Z", "t-cy-01", anonymousId="anon-cy-1", name="Shop"),
    message("page", "2026-11-02T12:00:00Z", "t-cy-02", anonymousId="anon-cy-1", name="Sale"),
    message(
        "identify",
        "2026-11-03T12:00:00Z",
        "t-cy-03",
        anonymousId="anon-cy-2",
        userId="u-cy-merge",
        traits={"email": f"cy.merge@{DOMAIN}"},
    ),
    # Dee: a newsletter subscriber who never bought.
    message("page", "2026-11-10T08:00:00Z", "t-dee-01", anonymousId="anon-dee", name="Blog"),
    message(
        "identify",
        "2026-11-10T08:01:00Z",
        "t-dee-02",
        anonymousId="anon-dee",
        traits={"email": f"dee.subscriber@{DOMAIN}"},
    ),
    message(
        "track",
        "2026-11-10T08:02:00Z",
        "t-dee-03",
        anonymousId="anon-dee",
        event="Newsletter Subscribed",
        properties={"list": "weekly"},
    ),
]

SECOND_RUN_EVENTS = [
    # Cy signs in on the first device: both devices are one customer now.
    message(
        "identify",
        "2026-11-16T09:00:00Z",
        "t-cy-04",
        anonymousId="anon-cy-1",
        userId="u-cy-merge",
        traits={},
    ),
    # Dee signs up and orders $900.
    message(
        "identify",
        "2026-11-17T09:00:00Z",
        "t-dee-04",
        anonymousId="anon-dee",
        userId="u-dee-buyer",
        traits={"email": f"dee.subscriber@{DOMAIN}"},
    ),
    order(
        "2026-11-17T09:05:00Z",
        "t-dee-05",
        "T-ORD-3",
        900.0,
        ["Espresso Machine", "Down Parka"],
        anonymousId="anon-dee",
        userId="u-dee-buyer",
    ),
]


def write_events(path: Path, messages: list[dict]) -> None:
    path.write_text("".join(json.dumps(m) + "\n" for m in messages))


def write_contacts(path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CONTACT_HEADER, restval="")
        writer.writeheader()
        writer.writerows(CRAFTED_CONTACTS)


def run_pipeline(landing: Path, warehouse: Path, env: dict[str, str], snapshot: Path):
    result = run_cdp("run", "--landing", str(landing), "--warehouse", str(warehouse), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    shutil.copyfile(warehouse.with_name("cdp_published.duckdb"), snapshot)
    return PipelineRun(snapshot, result.stdout)


def run_twice(root: Path) -> TwoRuns:
    landing = root / "landing"
    generate(PEOPLE, seed=SEED, out=landing, end=END)
    write_contacts(landing / "crm" / "contacts-crafted.csv")
    write_events(landing / "events" / "crafted-1.jsonl", FIRST_RUN_EVENTS)
    warehouse = root / "warehouse" / "cdp.duckdb"
    env = {"DAGSTER_HOME": str(root / "dagster"), "CDP_WAREHOUSE": "", "CDP_LANDING_DIR": ""}
    first = run_pipeline(landing, warehouse, env, root / "first_run.duckdb")
    write_events(landing / "events" / "crafted-2.jsonl", SECOND_RUN_EVENTS)
    second = run_pipeline(landing, warehouse, env, root / "second_run.duckdb")
    return TwoRuns(landing, warehouse, env, first, second)
