"""The summary `cdp run` prints at the end: what was loaded, resolved, segmented and sent."""

from datetime import datetime
from pathlib import Path

import dagster as dg

from orchestration.assets.raw import unreadable_files
from orchestration.checks import quality_lines
from orchestration.lookup import latest_propensity_run, propensity_summary
from orchestration.warehouse import connect_published


def print_run_summary(warehouse: Path, *, since: datetime, seconds: float, run_id: str) -> None:
    with dg.DagsterInstance.get() as instance:  # unreadable files and checks of this run
        unreadable = unreadable_files(run_id, instance)
        quality = quality_lines(run_id, instance)
    with connect_published(warehouse) as con:

        def one(sql: str, params: list | None = None):
            return con.execute(sql, params or []).fetchone()

        files, read, loaded, rejected = one(
            "select count(*), coalesce(sum(rows_read), 0), coalesce(sum(rows_loaded), 0), "
            "coalesce(sum(rows_rejected), 0) from raw.loaded_files "
            "where loaded_at >= ? and status in ('loaded', 'replaced')",
            [since],
        )
        total_loaded, total_rejected = one(
            "select coalesce(sum(rows_loaded), 0), coalesce(sum(rows_rejected), 0) "
            "from raw.loaded_files"
        )
        # Staging holds one row per distinct message id of raw.events: counting its rows is
        # exact, and costs nothing, where a count(distinct) of the ids took 2.8-5.5 s at 20M rows.
        duplicates = one(
            "select (select count(*) from raw.events) "
            "- (select count(*) from staging.stg_events__messages)"
        )[0]
        customers = one("select count(*) from cdp.customers")[0]
        identifiers = one("select count(*) from cdp.customer_identifiers")[0]
        held_out = con.execute(
            "select rule, count(*) from identity.identifiers_held_out group by rule order by rule"
        ).fetchall()
        id_changes = dict(
            con.execute(
                "select change, count(*) from cdp.customer_merges where changed_at >= ? group by 1",
                [since],
            ).fetchall()
        )
        segments = con.execute(
            "select segment_name, member_count, entered_count, exited_count from cdp.segments "
            "order by segment_name"
        ).fetchall()
        propensity = latest_propensity_run(con)
        syncs = con.execute(
            "select sync_name, status, added, changed, removed, failed from reverse_etl.sync_runs "
            "where started_at >= ? order by sync_name",
            [since],
        ).fetchall()

    print(f"\nRun {run_id} succeeded in {seconds:.1f}s")
    print(
        f"Loaded     {files:,} new or changed files: {read:,} rows read = {loaded:,} loaded + "
        f"{rejected:,} rejected (in total {total_loaded:,} loaded, {total_rejected:,} rejected; "
        "see raw.rejected_rows)"
    )
    print(f"           {duplicates:,} duplicate message ids kept in raw.events, removed in staging")
    for failed in unreadable:
        print(f"           UNREADABLE {failed['file']}: {failed['error']}")
    print("Quality    " + ("\n           ".join(quality) or "no data quality checks ran"))
    held = ", ".join(f"{count:,} {rule}" for rule, count in held_out) or "none"
    print(f"Customers  {customers:,} with {identifiers:,} identifiers (held out: {held})")
    print(
        f"           {id_changes.get('merge', 0):,} merges and {id_changes.get('split', 0):,} "
        "splits of customer ids in this run (see cdp.customer_merges)"
    )
    print(
        "Segments   "
        + (
            "\n           ".join(
                f"{name}: {count:,} ({entered:,} entered, {exited:,} exited)"
                for name, count, entered, exited in segments
            )
            or "none"
        )
    )
    print(f"Propensity {propensity_summary(propensity)}")
    if syncs:
        print(
            "Syncs      "
            + "\n           ".join(
                f"{name}: {status}, {added + changed + removed:,} rows sent "
                f"({added:,} added, {changed:,} changed, {removed:,} removed, {failed:,} failed)"
                for name, status, added, changed, removed, failed in syncs
            )
        )
    else:
        print("Syncs      none ran")
    for line in _syncs_not_in_this_run():
        print(f"           {line}")


def _syncs_not_in_this_run() -> list[str]:
    """Syncs of syncs.yml the pipeline does not run: disabled, or on their own schedule."""
    from orchestration.paths import SYNCS_FILE
    from reverse_etl.config import load_syncs

    syncs = load_syncs(SYNCS_FILE)
    disabled = [s.name for s in syncs if not s.enabled]
    scheduled = [f"{s.name} ({s.schedule})" for s in syncs if s.enabled and s.schedule]
    lines = []
    if disabled:
        lines.append(f"not run, enabled: false in syncs.yml: {', '.join(disabled)}")
    if scheduled:
        lines.append(f"on their own schedule: {', '.join(scheduled)}")
    return lines
