"""Stable customer ids across real dbt runs: the registry, merges, splits and explanations.

One warehouse goes through a sequence of runs, as a customer's data would:

1. first exports: B browses anonymously; D (CRM contact) and E (an app user) share a phone;
   F and G sign in on one shared device; a shop kiosk is used by eleven people, and so is
   a blocklisted placeholder device id ("unknown");
2. late-arriving history: older events of B, and a new person A whose events are older
   than anything loaded so far;
3. A signs in on B's device: the two customers merge;
4. a rule change blocklists the phone D and E shared: they split;
5. a full refresh of every model: the registry survives and nothing changes.

Each step runs the real dbt project on its own warehouse file (orchestration.loading loads
the files first, as the Dagster asset does); the last one builds every model so that
`cdp customer --explain` can read the published copy.
"""

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from orchestration.loading import load_landing
from orchestration.paths import DBT_PROJECT_DIR
from orchestration.warehouse import connect, publish
from seeds.generator import CONTACT_HEADER, generate
from tests.conftest import run_cdp

DBT = str(Path(sys.executable).with_name("dbt"))
IDENTITY_MODELS = "+identifiers_held_out +customer_merges +customer_identifiers"
SHARED_PHONE = "+14155550101"


def customer_id_for(identifier_type: str, value: str) -> str:
    """A new customer's id: documented in identity_registry.py and docs/identity.md."""
    return "cus_" + hashlib.md5(f"{identifier_type}:{value}".encode()).hexdigest()[:16]


def identify(message_id: str, at: str, **fields) -> dict:
    message = {"type": "identify", "messageId": message_id, "timestamp": at}
    traits = {k: fields.pop(k) for k in ("email", "phone") if k in fields}
    message.update({"anonymousId" if k == "anon" else "userId": v for k, v in fields.items()})
    if traits:
        message["traits"] = traits
    return message


def write_events(path: Path, messages: list[dict]) -> None:
    path.write_text("".join(json.dumps(m) + "\n" for m in messages))


@dataclass
class Warehouse:
    root: Path
    landing: Path
    path: Path
    default_rules: Path = DBT_PROJECT_DIR / "identity_rules.yml"

    def build(
        self, select: str | None = IDENTITY_MODELS, rules: Path | None = None, *extra: str
    ) -> subprocess.CompletedProcess:
        """Load new files, then `dbt build` the models (all of them when select is None)."""
        with connect(self.path) as con:
            load_landing(con, self.landing)
        command = [DBT, "build", "--target-path", str(self.root / "target")]
        command += ["--log-path", str(self.root / "logs"), *extra]
        if select:
            command += ["--select", select, "--indirect-selection", "cautious"]
        return subprocess.run(
            command,
            cwd=DBT_PROJECT_DIR,
            env={
                **os.environ,
                "CDP_WAREHOUSE": str(self.path),
                "CDP_IDENTITY_RULES": str(rules or self.default_rules),
            },
            capture_output=True,
            text=True,
            timeout=600,
        )

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        with duckdb.connect() as con:
            con.execute(f"attach '{self.path}' as warehouse (read_only)")
            con.execute("use warehouse")
            return con.execute(sql, params or []).fetchall()

    def customer_of(self, identifier_type: str, value: str) -> str | None:
        rows = self.query(
            "select customer_id from cdp.customer_identifiers "
            "where identifier_type = ? and identifier_value = ?",
            [identifier_type, value],
        )
        return rows[0][0] if rows else None

    def snapshot(self) -> list[tuple]:
        return self.query("select * from cdp.customer_identifiers order by all")


def built(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Callable | Warehouse | dict]:
    root = tmp_path_factory.mktemp("identity_registry")
    landing = root / "landing"
    generate(5, seed=11, out=landing)  # complete CRM exports, so that every model builds
    (landing / "crm" / "contacts-identity.csv").write_text(
        ",".join(CONTACT_HEADER)
        + "\n201,Dana,Diaz,D@X.com,(415) 555-0101,,,lead,,2026-01-05 09:00,,false,,\n"
    )
    events = landing / "events"

    def used_by_eleven(device: str, name: str, hour: int) -> list[dict]:
        """One identify message a day from `device`, each with another person's email."""
        return [
            identify(
                f"m-{name}-{i}",
                f"2026-01-{i + 1:02d}T{hour}:00:00Z",
                anon=device,
                email=f"{name[0]}{i}@shop.com",
            )
            for i in range(11)
        ]

    kiosk = used_by_eleven("kiosk-1", "kiosk", 12)
    # A placeholder device id (blocklisted) that eleven people also share: the blocklist, not
    # the super-node rule, holds it out.
    lobby = used_by_eleven("unknown", "lobby", 13)
    write_events(
        events / "identity-1.jsonl",
        [
            {
                "type": "page",
                "messageId": "m-b1",
                "anonymousId": "b1",
                "timestamp": "2026-02-01T10:00:00Z",
            },
            identify("m-e1", "2026-03-01T10:00:00Z", anon="e1", phone="415-555-0101"),
            identify("m-f1", "2026-01-10T10:00:00Z", user="uF", anon="s1"),
            identify("m-g1", "2026-01-20T10:00:00Z", user="uG", anon="s1"),
            *kiosk,
            *lobby,
        ],
    )
    warehouse = Warehouse(root, landing, root / "warehouse" / "cdp.duckdb")
    states = {}

    built(warehouse.build())
    states["first"] = warehouse.snapshot()
    first_ids = {
        "B": warehouse.customer_of("anonymous_id", "b1"),
        "D": warehouse.customer_of("email", "d@x.com"),
    }

    write_events(
        events / "identity-2-late.jsonl",
        [
            identify("m-b0", "2025-12-01T10:00:00Z", anon="b0", email="b@shop.com"),
            identify("m-b1-late", "2025-12-02T10:00:00Z", anon="b1", email="b@shop.com"),
            identify("m-a1", "2025-11-01T10:00:00Z", user="uA", anon="a1"),
        ],
    )
    built(warehouse.build())
    states["late"] = warehouse.snapshot()
    first_ids["A"] = warehouse.customer_of("user_id", "uA")

    write_events(
        events / "identity-3-login.jsonl",
        [identify("m-ab", "2026-04-01T10:00:00Z", user="uA", anon="b1")],
    )
    built(warehouse.build())
    states["merged"] = warehouse.snapshot()
    states["registry_rows_after_merge"] = warehouse.query(
        "select count(*) from identity.identity_registry"
    )

    broken = root / "broken_rules.yml"
    broken.write_text(
        warehouse.default_rules.read_text().replace("    priority: 3\n", "    priority: 2\n", 1)
    )
    states["broken"] = warehouse.build(rules=broken)
    states["after_broken"] = warehouse.snapshot()

    blocked = root / "rules_with_phone_blocked.yml"
    blocked.write_text(
        warehouse.default_rules.read_text()
        + f'  - {{type: phone, value: "{SHARED_PHONE}", reason: shared family phone}}\n'
    )
    built(warehouse.build(rules=blocked))
    states["split"] = warehouse.snapshot()
    states["registry_rows_after_split"] = warehouse.query(
        "select count(*) from identity.identity_registry"
    )

    built(warehouse.build(None, blocked, "--full-refresh"))
    states["refreshed"] = warehouse.snapshot()
    publish(warehouse.path)
    return {"warehouse": warehouse, "states": states, "ids": first_ids}


def test_a_new_customer_id_is_derived_from_its_earliest_identifier(runs):
    warehouse = runs["warehouse"]
    assert runs["ids"]["B"] == customer_id_for("anonymous_id", "b1")
    # D's contact names crm_contact_id, email and phone at once; email has the highest priority.
    assert runs["ids"]["D"] == customer_id_for("email", "d@x.com")
    first = dict(((t, v), c) for c, t, v, *_ in runs["states"]["first"])
    assert first[("anonymous_id", "e1")] == first[("phone", SHARED_PHONE)] == runs["ids"]["D"]
    assert first[("crm_contact_id", "201")] == runs["ids"]["D"]
    assert warehouse.query(
        "select distinct change from identity.identity_registry "
        "where changed_at = (select min(changed_at) from identity.identity_registry)"
    ) == [("new",)]


def test_a_shared_device_stays_with_the_first_user_and_never_chains_two_users(runs):
    first = dict(((t, v), c) for c, t, v, *_ in runs["states"]["first"])
    assert first[("anonymous_id", "s1")] == first[("user_id", "uF")]
    assert first[("user_id", "uG")] != first[("user_id", "uF")]
    held = runs["warehouse"].query(
        "select rule, detail, customer_id from identity.identifiers_held_out "
        "where identifier_value = 's1'"
    )
    assert held == [
        (
            "per_type_limit",
            "not linked to user_id:uG: the customer would hold 2 user_id (limit 1)",
            first[("user_id", "uF")],
        )
    ]


def test_a_super_node_is_listed_and_links_nobody(runs):
    first = dict(((t, v), c) for c, t, v, *_ in runs["states"]["first"])
    assert ("anonymous_id", "kiosk-1") not in first
    kiosk_customers = {first[("email", f"k{i}@shop.com")] for i in range(11)}
    assert len(kiosk_customers) == 11
    held = runs["warehouse"].query(
        "select rule, detail from identity.identifiers_held_out where identifier_value = 'kiosk-1'"
    )
    assert held == [("super_node", "seen with 11 people-level identifiers (threshold 10)")]


def test_a_blocked_value_shared_by_many_is_held_out_by_the_blocklist(runs):
    first = dict(((t, v), c) for c, t, v, *_ in runs["states"]["first"])
    assert ("anonymous_id", "unknown") not in first
    assert len({first[("email", f"l{i}@shop.com")] for i in range(11)}) == 11
    held = runs["warehouse"].query(
        "select rule, detail from identity.identifiers_held_out "
        "where identifier_type = 'anonymous_id' and identifier_value = 'unknown'"
    )
    assert held == [("blocklist", "placeholder value (blocklist value 'unknown')")]


def test_late_arriving_history_keeps_every_id(runs):
    first = dict(((t, v), c) for c, t, v, *_ in runs["states"]["first"])
    late = dict(((t, v), c) for c, t, v, *_ in runs["states"]["late"])
    assert all(late[key] == customer for key, customer in first.items())
    # b0 and B's email are older than b1, yet they join B's id instead of renaming it.
    assert late[("anonymous_id", "b0")] == late[("email", "b@shop.com")] == runs["ids"]["B"]
    assert late[("user_id", "uA")] == customer_id_for("user_id", "uA")
    second_run = runs["warehouse"].query(
        "select change, identifier_type, identifier_value from identity.identity_registry "
        "where changed_at = (select distinct changed_at from identity.identity_registry "
        "order by 1 limit 1 offset 1) order by all"
    )
    assert second_run == [
        ("new", "anonymous_id", "a1"),
        ("new", "anonymous_id", "b0"),
        ("new", "email", "b@shop.com"),
        ("new", "user_id", "uA"),
    ]


def test_a_merge_keeps_the_id_created_earlier_and_is_recorded_with_its_link(runs):
    merged = dict(((t, v), c) for c, t, v, *_ in runs["states"]["merged"])
    a_id, b_id = runs["ids"]["A"], runs["ids"]["B"]
    # A's history is older, but B's id was created first: B's id survives.
    for key in [("user_id", "uA"), ("anonymous_id", "a1"), ("anonymous_id", "b1")]:
        assert merged[key] == b_id
    assert a_id not in merged.values()
    merges = runs["warehouse"].query(
        "select change, merged_customer_id, surviving_customer_id, linking_identifier_type, "
        "linking_identifier_value, linking_record_key, identifier_count, reason "
        "from cdp.customer_merges where change = 'merge'"
    )
    assert len(merges) == 1
    change, merged_id, surviving_id, link_type, link_value, record, count, reason = merges[0]
    assert (change, merged_id, surviving_id) == ("merge", a_id, b_id)
    assert (link_type, link_value, record, count) == ("anonymous_id", "b1", "event:m-ab", 2)
    assert "user_id:uA" in reason and "identity-3-login.jsonl line 1" in reason


def test_a_broken_rules_file_stops_the_run_naming_the_file_and_key_and_changes_nothing(runs):
    result = runs["states"]["broken"]
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert (
        "broken_rules.yml: identifier_types.phone.priority: 2 is also the priority of email"
        in output
    )
    assert runs["states"]["after_broken"] == runs["states"]["merged"]


def test_a_rule_change_that_cuts_a_link_splits_and_the_older_part_keeps_the_id(runs):
    split = dict(((t, v), c) for c, t, v, *_ in runs["states"]["split"])
    d_id = runs["ids"]["D"]
    assert split[("email", "d@x.com")] == split[("crm_contact_id", "201")] == d_id
    assert split[("anonymous_id", "e1")] == customer_id_for("anonymous_id", "e1")
    assert ("phone", SHARED_PHONE) not in split
    splits = runs["warehouse"].query(
        "select merged_customer_id, surviving_customer_id, linking_identifier_type, "
        "linking_identifier_value, reason from cdp.customer_merges where change = 'split'"
    )
    assert len(splits) == 1
    new_id, kept_id, cut_type, cut_value, reason = splits[0]
    assert (new_id, kept_id, cut_type, cut_value) == (
        split[("anonymous_id", "e1")],
        d_id,
        "phone",
        SHARED_PHONE,
    )
    assert "shared family phone" in reason
    released = runs["warehouse"].query(
        "select change, previous_customer_id, customer_id from identity.identity_registry "
        "where identifier_type = 'phone' and identifier_value = ? order by changed_at",
        [SHARED_PHONE],
    )
    assert released == [("new", None, d_id), ("release", d_id, None)]


def test_a_full_refresh_keeps_the_registry_and_every_id(runs):
    states = runs["states"]
    assert states["refreshed"] == states["split"]
    assert (
        runs["warehouse"].query("select count(*) from identity.identity_registry")
        == states["registry_rows_after_split"]
    )
    assert states["registry_rows_after_merge"] < states["registry_rows_after_split"]


def test_explain_shows_the_links_their_records_the_held_out_identifiers_and_the_history(runs):
    warehouse = runs["warehouse"]
    env = {"CDP_WAREHOUSE": "", "DAGSTER_HOME": str(warehouse.root / "dagster")}

    def explained(identifier: str) -> dict:
        result = run_cdp(
            "customer",
            identifier,
            "--explain",
            "--json",
            "--warehouse",
            str(warehouse.path),
            env=env,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["explanation"]

    b = explained("user_id:uA")
    links = {
        frozenset(
            f"{i['identifier_type']}:{i['identifier_value']}" for i in link["identifiers"]
        ): link
        for link in b["links"]
    }
    login = links[frozenset({"user_id:uA", "anonymous_id:b1"})]
    assert login["first_record"] == "event:m-ab"
    assert Path(login["source_file"]).name == "identity-3-login.jsonl" and login["source_line"] == 1
    assert links[frozenset({"anonymous_id:b0", "email:b@shop.com"})]["first_record"] == "event:m-b0"
    assert [h["change"] for h in b["history"]] == ["merge"]

    d = explained("crm_contact_id:201")
    assert [(h["identifier_type"], h["identifier_value"], h["rule"]) for h in d["held_out"]] == [
        ("phone", SHARED_PHONE, "blocklist")
    ]
    assert d["held_out"][0]["first_record"] == "crm_contact:201"
    assert d["held_out"][0]["source_line"] == 2
    assert [h["change"] for h in d["history"]] == ["split"]

    f = explained("user_id:uF")
    refused = [
        ([f"{i['identifier_type']}:{i['identifier_value']}" for i in r["identifiers"]], r["rule"])
        for r in f["refused_links"]
    ]
    assert refused == [(["anonymous_id:s1", "user_id:uG"], "per_type_limit")]

    text = run_cdp(
        "customer", "uF", "--explain", "--warehouse", str(warehouse.path), env=env, timeout=120
    ).stdout
    assert "Links a rule refused" in text and "user_id:uG" in text
