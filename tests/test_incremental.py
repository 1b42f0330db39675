"""Incremental runs give exactly the tables a full rebuild gives on the same data, ids included.

The shared `two_runs` fixture runs the real `cdp run` twice with new data in between: the
second run is incremental (new events of known people, a new buyer, an anonymous device that
signs in and merges two customers). A copy of the warehouse after it then gets
`dbt build --full-refresh`, and every table of the dbt schemas must hold the same rows in
both. The persistent id registry is never rebuilt (full_refresh: false), so "ids included"
means: the incremental models key events, sessions and identifiers exactly as a rebuild from
the same registry does.
"""

import csv
import json
import math
import re
import shutil
from datetime import timedelta
from pathlib import Path

import duckdb

from orchestration.paths import DBT_PROJECT_DIR
from tests.conftest import dbt, run_cdp
from tests.customer_pipeline import (
    CONTACT_HEADER,
    CRAFTED_CONTACTS,
    DOMAIN,
    SECOND_RUN_EVENTS,
    TwoRuns,
    message,
)

SCHEMAS = ("staging", "identity", "intermediate", "cdp", "segments")
# Tables that record each build rather than the data: a rebuild appends its own rows (or
# counts the change since the build before it), so they differ by design.
BUILD_LOGS = {
    "cdp.segment_size_history": "one row per segment per build",
    "cdp.predictive_model_runs": "one row per build of the propensity model",
    "cdp.segments": "entered_count/exited_count count the change since the previous build",
}
# A column that records when the dbt invocation that wrote the row started (macro
# build_started_at): a rebuild writes its own time, so it differs by design.
BUILD_TIME = "_built_at"


def tables(con: duckdb.DuckDBPyConnection, catalog: str) -> set[str]:
    rows = con.execute(
        "select schema_name || '.' || table_name from duckdb_tables() "
        "where database_name = ? and schema_name in ?",
        [catalog, list(SCHEMAS)],
    ).fetchall()
    return {name for (name,) in rows}


def differing_rows(con: duckdb.DuckDBPyConnection, table: str) -> tuple[int, int]:
    """Rows only in the incremental table, rows only in the rebuilt one (as multisets), but
    for the BUILD_TIME column."""
    schema, name = table.split(".")
    has_build_time = con.execute(
        "select count(*) from duckdb_columns() where database_name = 'incremental' "
        "and schema_name = ? and table_name = ? and column_name = ?",
        [schema, name, BUILD_TIME],
    ).fetchone()[0]
    columns = f"* exclude ({BUILD_TIME})" if has_build_time else "*"
    only = (
        f"select count(*) from (select {columns} from {{}} except all select {columns} from {{}})"
    )
    inc, full = f"incremental.{table}", f"rebuilt.{table}"
    return (
        con.execute(only.format(inc, full)).fetchone()[0],
        con.execute(only.format(full, inc)).fetchone()[0],
    )


def assert_same_as_rebuild(warehouse: Path, root: Path) -> set[str]:
    """Rebuild a copy of ``warehouse`` with --full-refresh and assert that every table of the
    dbt schemas (but the build logs) holds the same rows in both; returns the table names."""
    root.mkdir()
    rebuilt = root / "rebuilt.duckdb"
    shutil.copyfile(warehouse, rebuilt)
    result = dbt("build", "--full-refresh", warehouse=rebuilt, target=root / "target-full")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    con = duckdb.connect()
    con.execute(f"attach '{warehouse}' as incremental (read_only)")
    con.execute(f"attach '{rebuilt}' as rebuilt (read_only)")
    names = tables(con, "incremental")
    assert names == tables(con, "rebuilt")
    compared = sorted(names - BUILD_LOGS.keys())
    differences = {t: differing_rows(con, t) for t in compared}
    assert {t: d for t, d in differences.items() if d != (0, 0)} == {}
    for table in compared:
        count = con.execute(f"select count(*) from incremental.{table}").fetchone()[0]
        assert count == con.execute(f"select count(*) from rebuilt.{table}").fetchone()[0]
    con.close()
    return names


def test_incremental_run_equals_full_refresh(two_runs: TwoRuns, tmp_path: Path):
    incremental = tmp_path / "incremental.duckdb"
    shutil.copyfile(two_runs.warehouse, incremental)
    names = assert_same_as_rebuild(incremental, tmp_path / "rebuild")
    # The models the second run built incrementally are among the compared tables.
    assert {
        "staging.stg_events__messages",
        "identity.identity_occurrences",
        "cdp.customer_events",
        "identity.identity_registry",
        "identity.identity_distinct_pairs",
        "identity.identity_identifier_counts",
        "intermediate.int_customer_profile_values",
        "cdp.customer_identifiers",
    } <= names


def test_incremental_python_models_leave_no_batch_tables(two_runs: TwoRuns):
    """dbt-duckdb writes an incremental Python model's batch (identity_components,
    identity_registry, int_purchase_propensity_models) to a table <model>__dbt_tmp<time> and
    leaves it; the post-hook drop_python_batch_tables drops it, so runs do not pile them up."""
    con = duckdb.connect(str(two_runs.warehouse), read_only=True)
    left = con.execute(
        "select table_name from duckdb_tables() where contains(table_name, '__dbt_tmp')"
    ).fetchall()
    built = con.execute(
        "select count(distinct changed_at) from identity.identity_registry"
    ).fetchone()[0]
    con.close()
    assert built == 2  # the second run appended to the registry: it was incremental
    assert left == []


def test_second_run_was_incremental_and_keyed_the_merge(two_runs: TwoRuns):
    """The second run read only the new messages, yet re-keyed the merged device's events:
    Cy's first anonymous device now belongs to Cy's account, sessions and all."""
    con = duckdb.connect(str(two_runs.second.published), read_only=True)
    owners = con.execute(
        "select distinct customer_id from cdp.customer_events "
        "where message_id in ('t-cy-01', 't-cy-02', 't-cy-03', 't-cy-04')"
    ).fetchall()
    assert len(owners) == 1 and owners[0][0] is not None
    first = duckdb.connect(str(two_runs.first.published), read_only=True)
    before = first.execute(
        "select count(distinct customer_id) from cdp.customer_events "
        "where message_id in ('t-cy-01', 't-cy-02', 't-cy-03')"
    ).fetchone()[0]
    assert before == 2
    # The distinct pairs of the first run were kept and the second run's added to them (the
    # pairs only gained rows), not rebuilt: both builds' rows are there.
    builds = con.execute(
        "select count(distinct _built_at), sum(record_count) from identity.identity_distinct_pairs"
    ).fetchone()
    assert builds == (2, con.execute("select count(*) from identity.identity_pairs").fetchone()[0])
    # So were the identifier counts: the second run added its occurrences to them.
    builds = con.execute(
        "select count(distinct _built_at), sum(occurrence_count) "
        "from identity.identity_identifier_counts"
    ).fetchone()
    occurrences = con.execute("select count(*) from identity.identity_occurrences").fetchone()[0]
    assert builds == (2, occurrences)


def test_customer_identifiers_writes_only_the_identifiers_that_changed(
    two_runs: TwoRuns, tmp_path: Path
):
    """A build with no registry change and no new count since the last one writes no row of
    cdp.customer_identifiers: a row edited in between stays as edited (a full rebuild would
    write it again from the registry and the counts), and a full refresh restores it."""
    warehouse = tmp_path / "copy.duckdb"
    shutil.copyfile(two_runs.warehouse, warehouse)
    row = "select first_seen_at from cdp.customer_identifiers where identifier_value = 'anon-cy-2'"
    with duckdb.connect(str(warehouse)) as con:
        (seen,) = con.execute(row).fetchone()
        con.execute(
            "update cdp.customer_identifiers set first_seen_at = timestamptz '2001-01-01 00:00Z' "
            "where identifier_value = 'anon-cy-2'"
        )
    for refresh, expected in (([], "2001-01-01"), (["--full-refresh"], seen.isoformat()[:10])):
        result = dbt(
            "run", "--select", "customer_identifiers", *refresh,
            warehouse=warehouse, target=tmp_path / "target",
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:]
        with duckdb.connect(str(warehouse), read_only=True) as con:
            assert con.execute(row).fetchone()[0].isoformat()[:10] == expected


def write_jsonl(path: Path, messages: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(m) + "\n" for m in messages))


def test_incremental_edge_cases_equal_full_refresh(two_runs: TwoRuns, tmp_path: Path):
    """More loads into a copy of the warehouse, each followed by an incremental build:

    1. a file whose name sorts before every other holds a copy of a known messageId with
       another anonymousId (the copy becomes the kept one), an alias from a previousId
       nobody has used as a userId yet, a page view from a kiosk's anonymousId and a
       sign-in on the kiosk (a link), a sign-in with a blocklisted email on a shared
       tablet, and three users' sign-ins on a family tablet (a user id's limit splits their
       component in three);
    2. ten people sign in on the tablet, as many as its threshold allows: the blocklisted
       email of step 1 is not counted, so it stays usable; twelve more people sign in on
       the kiosk: its anonymousId becomes a super node, and its link of step 1 is gone (only
       the identifiers with new records are classified again in this build, and only their
       links made again); the family tablet's second user signs in with an email: the
       component that the limit split is resolved again whole, and only the components of
       the new links are;
    3. a message that uses that previousId as a userId (the alias now names a user id), a
       copy of another known messageId in a file that sorts after its first copy's (the
       first copy stays), and late page views of a known customer that fill the gap between
       two of its sessions (they become one: the later session's events are written again,
       the sessions before stay);
    4. the first file changes (its earlier rows are replaced): the event models rebuild;
    5. a new CRM contacts export: a later version of a known contact with another email and
       a phone, and a new contact with the email of step 3's signed-in person (the contacts
       are collected again; in the runs before, they were left as they were).

    After 2, 3, 4 and 5 the tables equal a full rebuild of the same warehouse.
    """
    from orchestration.loading import load_landing

    warehouse = tmp_path / "cdp.duckdb"
    shutil.copyfile(two_runs.warehouse, warehouse)
    con = duckdb.connect(str(warehouse))
    known, late_copied = con.execute(
        "select message_id, user_id, event_at from staging.stg_events__messages "
        "where user_id is not null and message_type = 'track' order by message_id limit 2"
    ).fetchall()
    # The two consecutive sessions of a customer with a user id that are closest in time.
    customer, first_session, gap_start, gap_end, user_id = con.execute(
        """
        with sessions as (
            select customer_id, session_id, min(event_at) as starts, max(event_at) as ends
            from cdp.cdp.customer_events where customer_id is not null group by all
        ),
        gaps as (
            select customer_id, session_id, ends,
                lead(starts) over (partition by customer_id order by starts) as next_starts
            from sessions
        )
        select g.customer_id, g.session_id, g.ends, g.next_starts, min(i.identifier_value)
        from gaps as g
        inner join cdp.cdp.customer_identifiers as i
            on i.customer_id = g.customer_id and i.identifier_type = 'user_id'
        where g.next_starts is not null
        group by g.customer_id, g.session_id, g.ends, g.next_starts
        order by g.next_starts - g.ends, g.customer_id
        limit 1
        """
    ).fetchone()
    customer_before = con.execute(
        "select message_id, session_id, event_at from cdp.cdp.customer_events "
        "where customer_id = ?",
        [customer],
    ).fetchall()
    next_session = next(session for _m, session, at in customer_before if at == gap_end)
    con.close()
    # Page views every 20 minutes or less across the gap (sessions end after 30 idle minutes).
    views = math.ceil((gap_end - gap_start) / timedelta(minutes=20)) - 1
    step = (gap_end - gap_start) / (views + 1)
    bridge = [
        message("page", (gap_start + step * k).isoformat(), f"t-bridge-{k}", userId=user_id,
                name="Home")
        for k in range(1, views + 1)
    ]  # fmt: skip
    landing = tmp_path / "landing"
    at = known[2].isoformat()
    first_file = [
        message("track", at, known[0], userId=known[1], anonymousId="anon-early-copy",
                event="Product Viewed", properties={}),
        message("alias", "2026-11-18T10:00:00Z", "t-late-alias", previousId="late-account",
                userId="u-late-person"),
        message("page", "2026-11-18T11:00:00Z", "t-kiosk-0", anonymousId="anon-kiosk",
                name="Home"),
        message("identify", "2026-11-18T11:30:00Z", "t-kiosk-signin-0", anonymousId="anon-kiosk",
                userId="u-kiosk-0", traits={}),
        message("identify", "2026-11-18T12:00:00Z", "t-shared-0", anonymousId="anon-shared",
                traits={"email": "test@test.com"}),
        message("identify", "2026-11-18T13:00:00Z", "t-family-a", anonymousId="anon-family",
                userId="u-family-a", traits={}),
        message("identify", "2026-11-18T14:00:00Z", "t-family-b", anonymousId="anon-family",
                userId="u-family-b", traits={}),
        message("identify", "2026-11-18T15:00:00Z", "t-family-c", anonymousId="anon-family",
                userId="u-family-c", traits={}),
    ]  # fmt: skip
    # The shared tablet: 10 people sign in on it, as many as its threshold allows.
    shared = [
        message("identify", f"2026-11-19T1{i % 10}:30:00Z", f"t-shared-{i}",
                anonymousId="anon-shared", traits={"email": f"shared-{i}@crafted-mail.net"})
        for i in range(1, 11)
    ]  # fmt: skip
    # The kiosk: 12 more people sign in, its anonymousId becomes a super node (held out).
    kiosk = [
        message("identify", f"2026-11-19T1{i % 10}:00:00Z", f"t-kiosk-{i}",
                anonymousId="anon-kiosk", userId=f"u-kiosk-{i}", traits={})
        for i in range(1, 13)
    ]  # fmt: skip
    steps = [
        ("0-early.jsonl", first_file),
        ("shared.jsonl", [*shared, *kiosk, message(
            "identify", "2026-11-19T13:00:00Z", "t-family-b-email", userId="u-family-b",
            traits={"email": "family-b@crafted-mail.net"})]),
        ("late-2.jsonl", [
            message("identify", "2026-11-19T10:00:00Z", "t-late-login", userId="late-account",
                    anonymousId="anon-late-device", traits={"email": "late@crafted-mail.net"}),
            message("track", late_copied[2].isoformat(), late_copied[0], userId=late_copied[1],
                    anonymousId="anon-late-copy", event="Product Viewed", properties={}),
            *bridge,
        ]),
        ("0-early.jsonl", first_file[1:]),  # changed: the copied message is gone
    ]  # fmt: skip
    for step, (name, messages) in enumerate(steps, start=1):
        write_jsonl(landing / "events" / name, messages)
        con = duckdb.connect(str(warehouse))
        report = load_landing(con, landing)
        con.close()
        statuses = {f.path.name: f.status for f in report.files}
        assert statuses[name] == ("replaced" if step == 4 else "loaded")
        result = dbt("build", warehouse=warehouse, target=tmp_path / "target")
        assert result.returncode == 0, result.stdout[-4000:]
        if step >= 2:
            assert_same_as_rebuild(warehouse, tmp_path / f"step{step}")
        if step == 2:
            # identity_identifiers was built incrementally: the blocklisted email kept its row.
            con = duckdb.connect(str(warehouse), read_only=True)
            built = dict(
                con.execute(
                    "select identifier_value, _built_at from identity.identity_identifiers "
                    "where identifier_value in ('anon-shared', 'test@test.com')"
                ).fetchall()
            )
            # So were identity_edges and identity_components: they kept rows of the builds
            # before this one.
            builds = [
                con.execute(f"select count(distinct _built_at) from identity.{table}").fetchone()[0]
                for table in ("identity_edges", "identity_components")
            ]
            # The family tablet stays with the user seen on it first; the second, split off,
            # got his email.
            family = dict(
                con.execute(
                    "select identifier_value, customer_id from cdp.cdp.customer_identifiers "
                    "where identifier_value in "
                    "('anon-family', 'u-family-a', 'u-family-b', 'family-b@crafted-mail.net')"
                ).fetchall()
            )
            con.close()
            assert built["test@test.com"] < built["anon-shared"], built
            assert min(builds) >= 2, builds
            assert family["anon-family"] == family["u-family-a"] != family["u-family-b"], family
            assert family["family-b@crafted-mail.net"] == family["u-family-b"], family
        if step == 3:
            con = duckdb.connect(str(warehouse), read_only=True)
            sessions = dict(
                con.execute(
                    "select message_id, session_id from cdp.cdp.customer_events "
                    "where customer_id = ?",
                    [customer],
                ).fetchall()
            )
            con.close()
            assert views >= 1 and len(sessions) == len(customer_before) + views
            # The session after the gap joins the one before it; the others keep their ids.
            joined = {b["messageId"] for b in bridge} | {
                m for m, session, _at in customer_before if session in (first_session, next_session)
            }
            assert {sessions[m] for m in joined} == {first_session}
            assert all(sessions[m] == session for m, session, _at in customer_before
                       if m not in joined)  # fmt: skip

    bo = {**CRAFTED_CONTACTS[1], "Email": f"bo.moved@{DOMAIN}", "Phone Number": "(415) 555-0142"}
    bo["Last Activity Date"] = "2026-11-20 12:00"
    newcomer = {"Record ID": "990000003", "First Name": "Late", "Email": "late@crafted-mail.net"}
    (landing / "crm").mkdir()
    with (landing / "crm" / "contacts-later.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CONTACT_HEADER, restval="")
        writer.writeheader()
        writer.writerows([bo, newcomer])
    con = duckdb.connect(str(warehouse))
    load_landing(con, landing)
    con.close()
    result = dbt("build", warehouse=warehouse, target=tmp_path / "target")
    assert result.returncode == 0, result.stdout[-4000:]
    assert_same_as_rebuild(warehouse, tmp_path / "step5")

    con = duckdb.connect(str(warehouse), read_only=True)
    late_copy = con.execute(
        "select anonymous_id, _source_file from staging.stg_events__messages where message_id = ?",
        [late_copied[0]],
    ).fetchall()
    assert len(late_copy) == 1 and late_copy[0][0] != "anon-late-copy", late_copy
    assert not late_copy[0][1].endswith("late-2.jsonl"), late_copy
    contact_identifiers = con.execute(
        "select record_key, identifier_type, identifier_value "
        "from identity.identity_occurrences "
        "where record_key in ('crm_contact:990000002', 'crm_contact:990000003') "
        "and identifier_type in ('email', 'phone') order by all"
    ).fetchall()
    assert contact_identifiers == [
        ("crm_contact:990000002", "email", f"bo.moved@{DOMAIN}"),
        ("crm_contact:990000002", "phone", "+14155550142"),
        ("crm_contact:990000003", "email", "late@crafted-mail.net"),
    ]
    # The alias's previousId is a user id now (a later message used it as one).
    typed = con.execute(
        "select identifier_type from identity.identity_occurrences "
        "where record_key = 'event:t-late-alias' and identifier_value = 'late-account'"
    ).fetchall()
    assert typed == [("user_id",)]
    # The kiosk's first page view had a customer of its own; now its only identifier is held
    # out, so it has none.
    held_out = con.execute(
        "select rule from identity.identifiers_held_out where identifier_value = 'anon-kiosk'"
    ).fetchall()
    assert held_out == [("super_node",)]
    # The shared tablet's blocklisted neighbour, read in an earlier run, is still not counted.
    shared_rule = con.execute(
        "select held_out_rule from identity.identity_identifiers "
        "where identifier_value in ('anon-shared', 'test@test.com') order by identifier_value"
    ).fetchall()
    assert shared_rule == [(None,), ("blocklist",)]
    kiosk_page = con.execute(
        "select customer_id from cdp.cdp.customer_events where message_id = 't-kiosk-0'"
    ).fetchall()
    assert kiosk_page == [(None,)]


def validated_rows(output: str, table: str) -> int:
    since = "rows loaded since the last passing check"
    found = re.search(rf"{re.escape(table)}: \w+: .* on the ([\d,]+) {since}", output)
    assert found, output
    return int(found.group(1).replace(",", ""))


def test_each_run_validates_the_rows_it_loaded(two_runs: TwoRuns):
    """The great-expectations suites read the rows a run loaded, not the whole history."""
    first = duckdb.connect(str(two_runs.first.published), read_only=True)
    for table in ("raw.events", "raw.crm_contacts"):
        total = first.execute(f"select count(*) from {table}").fetchone()[0]
        assert validated_rows(two_runs.first.output, table) == total > 0
    # The second run loaded one new events file with the three second-run messages.
    assert validated_rows(two_runs.second.output, "raw.events") == len(SECOND_RUN_EVENTS)
    assert validated_rows(two_runs.second.output, "raw.crm_contacts") == 0


def test_cdp_run_full_refresh_rebuilds_the_incremental_models(two_runs: TwoRuns, tmp_path: Path):
    """`cdp run --full-refresh` rebuilds from the raw tables: a row that no raw row backs
    (planted here) is gone afterwards, and the id registry is kept."""
    warehouse = tmp_path / "warehouse" / "cdp.duckdb"
    warehouse.parent.mkdir()
    shutil.copyfile(two_runs.warehouse, warehouse)
    con = duckdb.connect(str(warehouse))
    con.execute(
        "insert into staging.stg_events__messages by name "
        "select 'planted-message' as message_id, 'track' as message_type, "
        "now() as event_at, '-' as _source_file, 1 as _source_line, now() as _loaded_at"
    )
    registry = con.execute("select count(*) from identity.identity_registry").fetchone()[0]
    con.close()
    env = {**two_runs.env, "DAGSTER_HOME": str(tmp_path / "dagster")}
    result = run_cdp(
        "run", "--full-refresh", "--landing", str(two_runs.landing), "--warehouse",
        str(warehouse), env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    con = duckdb.connect(str(warehouse), read_only=True)
    planted = con.execute(
        "select count(*) from staging.stg_events__messages where message_id = 'planted-message'"
    ).fetchone()[0]
    assert planted == 0
    assert con.execute("select count(*) from identity.identity_registry").fetchone()[0] == registry


def test_a_warehouse_built_before_incremental_models_is_rebuilt_not_broken(
    two_runs: TwoRuns, tmp_path: Path
):
    """Tables an earlier version built (staging as a view, no watermark columns) are rebuilt
    by the next run instead of failing it, and a table it no longer builds
    (identity.identity_resolved, now cdp.customer_identifiers) is dropped, not left stale."""
    warehouse = tmp_path / "cdp.duckdb"
    shutil.copyfile(two_runs.warehouse, warehouse)
    con = duckdb.connect(str(warehouse))
    profile_values = "select * exclude (_loaded_at, _assigned_at, sources_version) from {}"
    before = con.execute(
        profile_values.format("intermediate.int_customer_profile_values")
    ).fetchall()
    con.execute("drop table staging.stg_events__messages")
    con.execute("create view staging.stg_events__messages as select 1 as message_id")
    con.execute("create table identity.identity_resolved as from cdp.cdp.customer_identifiers")
    for table, column in [
        ("identity.identity_occurrences", "_loaded_at"),
        ("identity.identity_occurrences", "rules_version"),
        ("identity.identity_occurrences", "_built_at"),
        ("cdp.cdp.customer_events", "customer_assigned_at"),
        ("cdp.cdp.customer_events", "_loaded_at"),
        ("intermediate.int_customer_profile_values", "_loaded_at"),
        ("intermediate.int_customer_profile_values", "_assigned_at"),
        ("intermediate.int_customer_profile_values", "sources_version"),
    ]:
        con.execute(f"alter table {table} drop column {column}")
    con.close()
    result = dbt("build", warehouse=warehouse, target=tmp_path / "target")
    assert result.returncode == 0, result.stdout[-4000:]
    con = duckdb.connect(str(warehouse), read_only=True)
    staged = con.execute("select count(*) from staging.stg_events__messages").fetchone()[0]
    keyed = con.execute(
        "select count(*) from cdp.cdp.customer_events where _loaded_at is not null "
        "and (customer_id is null or customer_assigned_at is not null)"
    ).fetchone()[0]
    assert staged == keyed > 1000
    assert (
        con.execute(
            "select count(*) from identity.identity_occurrences where rules_version is null"
        ).fetchone()[0]
        == 0
    )
    after = con.execute(
        profile_values.format("intermediate.int_customer_profile_values")
    ).fetchall()
    assert sorted(after, key=repr) == sorted(before, key=repr) and len(after) > 100
    tables = con.execute("select schema_name || '.' || table_name from duckdb_tables()").fetchall()
    assert ("identity.identity_resolved",) not in tables
    assert ("cdp.customer_identifiers",) in tables


def test_a_staging_table_with_a_column_no_longer_staged_is_rebuilt(
    two_runs: TwoRuns, tmp_path: Path
):
    """Staging once copied each message's context, and identity_occurrences each record's id
    beside its key; a table built then is rebuilt without the column (an incremental model
    fails on a schema change), with every row, not emptied."""
    warehouse = tmp_path / "cdp.duckdb"
    shutil.copyfile(two_runs.warehouse, warehouse)
    con = duckdb.connect(str(warehouse))
    staged = con.execute("select count(*) from staging.stg_events__messages").fetchone()[0]
    occurrences = "select * exclude (_built_at) from identity.identity_occurrences"
    occurred = con.execute(occurrences).fetchall()
    con.execute("alter table staging.stg_events__messages add column context json")
    con.execute("alter table identity.identity_occurrences add column record_id varchar")
    con.close()
    result = dbt("build", warehouse=warehouse, target=tmp_path / "target")
    assert result.returncode == 0, result.stdout[-4000:]
    con = duckdb.connect(str(warehouse), read_only=True)

    def columns(schema: str, table: str) -> list[str]:
        return [
            row[0]
            for row in con.execute(
                "select column_name from duckdb_columns() where schema_name = ? and table_name = ?",
                [schema, table],
            ).fetchall()
        ]

    assert "context" not in columns("staging", "stg_events__messages")
    assert "message_id" in columns("staging", "stg_events__messages")
    assert "record_id" not in columns("identity", "identity_occurrences")
    # Rebuilt with the same rows, though the pre-hook emptied it (the run wrote them again).
    assert sorted(con.execute(occurrences).fetchall(), key=repr) == sorted(occurred, key=repr)
    assert len(occurred) > 1000
    distinct_ids = con.execute("select count(distinct message_id) from raw.events").fetchone()[0]
    assert con.execute("select count(*) from staging.stg_events__messages").fetchone()[0] == (
        staged
    )
    assert staged == distinct_ids > 1000


def test_uniqueness_tests_fail_on_a_repeated_row_only(two_runs: TwoRuns, tmp_path: Path):
    """The generic test unique_combination and dbt's unique test (both grouped by a hash of the
    key first, macros/tests_unique.sql) pass on the built warehouse and report the one
    repeated row once a row is copied; unique does not compare NULLs."""
    warehouse = tmp_path / "copy.duckdb"
    shutil.copyfile(two_runs.warehouse, warehouse)
    tests = [
        "unique_combination_identifiers_held_out_identifier_type__identifier_value__rule",
        "unique_customers_customer_id",
    ]

    def outcome() -> str:
        result = dbt("test", "--select", *tests, warehouse=warehouse, target=tmp_path / "target")
        return result.stdout

    with duckdb.connect(str(warehouse)) as con:
        con.execute(
            "insert into cdp.customers by name "
            "select * replace (null as customer_id) from cdp.customers limit 2"
        )
    assert re.search(r"PASS=2 WARN=0 ERROR=0", outcome())
    with duckdb.connect(str(warehouse)) as con:
        con.execute(
            "insert into identity.identifiers_held_out "
            "select * from identity.identifiers_held_out limit 1"
        )
        con.execute(
            "insert into cdp.customers "
            "select * from cdp.customers where customer_id is not null limit 1"
        )
    failed = outcome()
    assert len(re.findall(r"Got 1 result", failed)) == 2, failed[-3000:]
    assert re.search(r"ERROR=2", failed), failed[-3000:]


def test_a_run_that_builds_a_repeated_key_fails_and_keeps_the_table(
    two_runs: TwoRuns, tmp_path: Path
):
    """The post-hook fail_on_repeated_keys (macros/tests_unique.sql) checks the rows a run
    builds, incremental or from scratch: customer_events edited to repeat one of its rows
    fails, names the model and the key, and its table keeps every row it had."""
    warehouse = tmp_path / "copy.duckdb"
    shutil.copyfile(two_runs.warehouse, warehouse)
    project = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs"))
    model = project / "models" / "marts" / "cdp" / "customer_events.sql"
    model.write_text(
        model.read_text() + "union all (select * from final order by message_id limit 1)\n"
    )
    state = (
        "select count(*), sum(hash(message_id, customer_id, session_id)) from cdp.customer_events"
    )
    with duckdb.connect(str(warehouse)) as con:
        full = con.execute(state).fetchone()
        # The newest load's events are keyed again by the next incremental run.
        con.execute(
            "delete from cdp.customer_events "
            "where _loaded_at = (select max(_loaded_at) from cdp.customer_events)"
        )
        kept = con.execute(state).fetchone()
    assert 0 < kept[0] < full[0]

    for refresh in ([], ["--full-refresh"]):
        result = dbt(
            "run", "--select", "customer_events", *refresh,
            warehouse=warehouse, target=tmp_path / "target-edited", project=project,
        )  # fmt: skip
        assert result.returncode != 0
        assert (
            "customer_events: the rows this run built repeat 1 key(s) of (message_id)"
            in result.stdout
        ), result.stdout[-3000:]
        with duckdb.connect(str(warehouse), read_only=True) as con:
            assert con.execute(state).fetchone() == kept

    result = dbt(
        "run", "--select", "customer_events", warehouse=warehouse, target=tmp_path / "target"
    )
    assert result.returncode == 0, result.stdout[-3000:]
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute(state).fetchone() == full


def test_a_change_to_the_field_sources_recomputes_every_profile_value(
    two_runs: TwoRuns, tmp_path: Path
):
    """int_customer_profile_values keeps the customers that did not change, unless
    vars.customer_field_sources changed (its sources_version): then the incremental run gives
    the rows of a full rebuild with the new ranks."""
    sources = (
        "{customer_field_sources: {first_name: [identify, crm], last_name: [crm, identify], "
        "company_name: [crm, identify], lifecycle_stage: [crm], email: [crm, identify], "
        "phone: [identify, crm]}}"
    )
    model = "intermediate.int_customer_profile_values"
    builds = {}
    for name, flags in [("incremental", []), ("rebuilt", ["--full-refresh"])]:
        warehouse = tmp_path / f"{name}.duckdb"
        shutil.copyfile(two_runs.warehouse, warehouse)
        result = dbt(
            "run", "--select", "int_customer_profile_values", "--vars", sources, *flags,
            warehouse=warehouse, target=tmp_path / f"target-{name}",
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-4000:]
        builds[name] = warehouse
    con = duckdb.connect()
    con.execute(f"attach '{two_runs.warehouse}' as before (read_only)")
    for name, warehouse in builds.items():
        con.execute(f"attach '{warehouse}' as {name} (read_only)")
    assert differing_rows(con, model) == (0, 0)
    survivors = (
        "select count(*) from (select customer_id, field, source from {}.{} where is_survivor "
        "and field in ('first_name', 'email') except select customer_id, field, source "
        "from {}.{} where is_survivor)"
    )
    assert con.execute(survivors.format("incremental", model, "before", model)).fetchone()[0] > 10
