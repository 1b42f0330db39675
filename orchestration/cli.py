"""`cdp`: run the pipeline, generate demo data, look up customers and segments, run syncs."""

import argparse
import fcntl
import json
import os
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from orchestration import paths

DAGSTER_YAML = """\
# Written by `cdp run` on first use. One run at a time: DuckDB has one writer.
concurrency:
  runs:
    max_concurrent_runs: 1
telemetry:
  enabled: false
"""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    try:
        return args.handler(args)
    except CliError as error:
        print(f"cdp {args.command}: {error}", file=sys.stderr)
        return 2


class CliError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cdp", description="A warehouse-native customer data platform."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the whole pipeline through Dagster and print a summary",
        description="Load the exports, build the dbt models, run the syncs and publish the "
        "warehouse for readers, as one Dagster run recorded in DAGSTER_HOME (default .dagster/).",
    )
    _add_warehouse_option(run)
    run.add_argument(
        "--landing",
        type=Path,
        help="folder of exports (crm/*.csv, events/*.jsonl[.gz]); default $CDP_LANDING_DIR "
        "or the demo exports in seeds/demo",
    )
    run.add_argument(
        "--full-refresh",
        action="store_true",
        help="rebuild every dbt model from all loaded data instead of only what changed (the "
        "id registry and the segment history are kept); needed after editing an incremental "
        "model's SQL",
    )
    run.set_defaults(handler=_run)

    generate = commands.add_parser(
        "generate",
        help="write realistic synthetic exports with a ground-truth file",
        description="Write CRM CSV exports, Segment-spec event JSONL and truth.csv for N people.",
    )
    generate.add_argument("--customers", type=int, required=True, help="number of people")
    generate.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    generate.add_argument("--out", type=Path, required=True, help="output folder")
    generate.add_argument(
        "--end",
        type=_parse_date,
        help="last day of the generated history, YYYY-MM-DD (default today, UTC)",
    )
    generate.add_argument(
        "--workers",
        type=int,
        help="processes for runs of more than 100,000 people (default: one per CPU); "
        "the output does not depend on it",
    )
    generate.set_defaults(handler=_generate)

    customer = commands.add_parser(
        "customer",
        help="print one customer's card",
        description="Look a customer up by an identifier, typed (email:ana@x.com, "
        "user_id:u1, phone:+14155550123, anonymous_id:..., crm_contact_id:...) or bare.",
    )
    customer.add_argument("identifier")
    customer.add_argument("--json", action="store_true", help="print JSON")
    customer.add_argument(
        "--explain",
        action="store_true",
        help="also show why the identifiers are together: each link with the record that made "
        "it, links a rule refused, identifiers held out, merges and splits",
    )
    _add_warehouse_option(customer)
    customer.set_defaults(handler=_customer)

    segments = commands.add_parser(
        "segments",
        help="list segments: size, entered and exited since the previous run",
        description="Every segment with its size and who entered and exited it in the latest "
        "run (against the run before), its owner, definition and description.",
    )
    segments.add_argument("--json", action="store_true", help="print JSON")
    _add_warehouse_option(segments)
    segments.set_defaults(handler=_segments)

    report = commands.add_parser(
        "report",
        help="write a static HTML report: segment sizes over time, identity statistics",
        description="Write one self-contained HTML file (charts as inline SVG, nothing loaded "
        "from the network) from the published warehouse.",
    )
    report.add_argument(
        "--out",
        type=Path,
        help="the HTML file to write (default: report.html beside the warehouse)",
    )
    _add_warehouse_option(report)
    report.set_defaults(handler=_report)

    sync = commands.add_parser(
        "sync",
        help="run reverse-ETL syncs from reverse_etl/syncs.yml",
        description="Send what changed since each sync's last successful run (all syncs when "
        "no NAME is given). Needs the warehouse for writing: not while a run is in progress.",
    )
    sync.add_argument("name", nargs="?", help="the sync to run (default: all)")
    sync.add_argument(
        "--dry-run", action="store_true", help="print the planned adds, changes and removes only"
    )
    sync.add_argument(
        "--syncs",
        type=Path,
        help="the syncs file (default reverse_etl/syncs.yml in the project)",
    )
    _add_warehouse_option(sync)
    sync.set_defaults(handler=_sync)
    return parser


def _add_warehouse_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--warehouse",
        type=Path,
        help="the DuckDB warehouse file; default $CDP_WAREHOUSE or warehouse/cdp.duckdb",
    )


def _parse_date(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date like 2026-11-15") from error


def _use_warehouse(args: argparse.Namespace) -> Path:
    if args.warehouse:
        os.environ["CDP_WAREHOUSE"] = str(args.warehouse.expanduser().resolve())
    return paths.warehouse_path()


# --- cdp run ---------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    warehouse = _use_warehouse(args)
    if args.landing:
        os.environ["CDP_LANDING_DIR"] = str(args.landing.expanduser().resolve())
    landing = paths.landing_dir()
    if not landing.is_dir():
        raise CliError(
            f"the landing directory {landing} does not exist: pass --landing DIR with "
            "crm/*.csv and events/*.jsonl exports (see README)"
        )
    dagster_home = _prepare_dagster_home()
    print(
        f"cdp run: exports {landing}\n         warehouse {warehouse}\n"
        f"         dagster home {dagster_home}"
    )
    started = datetime.now(UTC)
    clock = time.monotonic()
    with _single_run_lock(dagster_home):
        result = execute_pipeline(full_refresh=args.full_refresh)
    if not result.success:
        print(f"\nThe run failed ({result.run_id}):", file=sys.stderr)
        for event in result.all_events:
            if event.is_step_failure:
                error = event.step_failure_data.error
                print(
                    f"- {event.step_key}: {error.message.strip() if error else 'failed'}",
                    file=sys.stderr,
                )
        print("See the run in the Dagster UI: make dagster-dev", file=sys.stderr)
        return 1
    from orchestration.summary import print_run_summary

    print_run_summary(
        warehouse, since=started, seconds=time.monotonic() - clock, run_id=result.run_id
    )
    return 0


def execute_pipeline(full_refresh: bool = False):
    """Execute the pipeline job in this process, recorded in the Dagster instance;
    full_refresh: `dbt build --full-refresh`."""
    import dagster as dg

    from orchestration.definitions import defs
    from orchestration.jobs import PIPELINE_JOB_NAME
    from orchestration.progress import compact_console_logger

    job = defs().resolve_job_def(PIPELINE_JOB_NAME)
    job = job.with_logger_defs({"console": compact_console_logger})
    with dg.DagsterInstance.get() as instance:
        return job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config={
                "loggers": {"console": {}},
                "ops": {"cdp_dbt_models": {"config": {"full_refresh": full_refresh}}},
            },
        )


def _prepare_dagster_home() -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or paths.DEFAULT_DAGSTER_HOME).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


@contextmanager
def _single_run_lock(dagster_home: Path):
    with open(dagster_home / "cdp-run.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise CliError(
                "another `cdp run` is in progress on this Dagster home; wait for it to finish"
            ) from error
        yield


# --- cdp generate ----------------------------------------------------------------------


def _generate(args: argparse.Namespace) -> int:
    from seeds.generator import generate

    if args.customers < 1:
        raise CliError("--customers must be at least 1")
    if args.workers is not None and args.workers < 1:
        raise CliError("--workers must be at least 1")
    started = time.monotonic()
    report = generate(
        args.customers,
        seed=args.seed,
        out=args.out,
        end=args.end,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        workers=args.workers,
    )
    print(
        f"Wrote {report.people:,} people to {args.out}: {report.contacts:,} contacts, "
        f"{report.companies:,} companies, {report.deals:,} deals, {report.tickets:,} tickets, "
        f"{report.events:,} events, {report.identifiers:,} truth rows "
        f"in {time.monotonic() - started:.1f}s"
    )
    return 0


# --- read commands ---------------------------------------------------------------------


def _customer(args: argparse.Namespace) -> int:
    from orchestration.lookup import customer_cards, format_card

    warehouse = _use_warehouse(args)
    cards = customer_cards(warehouse, args.identifier)
    if args.explain:
        from orchestration.explain import explain_customers, format_explanation

        ids = [card["profile"]["customer_id"] for card in cards]
        for card, explanation in zip(cards, explain_customers(warehouse, ids)):
            card["explanation"] = explanation
    if args.json:
        print(json.dumps(cards if len(cards) != 1 else cards[0], indent=2, default=str))
        return 0 if cards else 1
    if not cards:
        print(f"No customer has the identifier '{args.identifier}'.")
        return 1
    if len(cards) > 1:
        print(f"{len(cards)} customers match '{args.identifier}':\n")
    shown = [format_card(card) for card in cards]
    if args.explain:
        shown = [f"{text}\n{format_explanation(c['explanation'])}" for text, c in zip(shown, cards)]
    print("\n\n".join(shown))
    return 0


def _segments(args: argparse.Namespace) -> int:
    from orchestration.lookup import segment_overview
    from orchestration.warehouse import WarehouseError

    try:
        rows = segment_overview(_use_warehouse(args))
    except WarehouseError as error:
        raise CliError(str(error)) from error
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if rows:
        built, previous = rows[0]["built_at"], rows[0]["previous_built_at"]
        since = f"the run of {previous.astimezone(UTC):%Y-%m-%d %H:%M}" if previous else "none"
        print(
            f"Entered and exited in the run of {built.astimezone(UTC):%Y-%m-%d %H:%M} UTC, "
            f"against {since} (the run before)"
        )
    width = max([len(r["segment_name"]) for r in rows] + [7])
    print(
        f"{'segment':<{width}}  {'members':>8}  {'entered':>8}  {'exited':>8}  owner / description"
    )
    for row in rows:
        print(
            f"{row['segment_name']:<{width}}  {row['member_count']:>8,}  "
            f"{row['entered_count']:>8,}  {row['exited_count']:>8,}  "
            f"{row['owner']}: {row['description']}"
        )
    return 0


def _report(args: argparse.Namespace) -> int:
    from orchestration.report import write_report
    from orchestration.warehouse import WarehouseError

    warehouse = _use_warehouse(args)
    out = (args.out or warehouse.with_name("report.html")).expanduser().resolve()
    try:
        write_report(warehouse, out)
    except WarehouseError as error:
        raise CliError(str(error)) from error
    print(f"Wrote {out}")
    return 0


# --- cdp sync --------------------------------------------------------------------------


def _sync(args: argparse.Namespace) -> int:
    from orchestration.warehouse import WarehouseError, connect, publish
    from reverse_etl.config import ConfigError, load_syncs
    from reverse_etl.engine import SyncError, run_sync
    from reverse_etl.pii import redact

    warehouse = _use_warehouse(args)
    syncs_file = args.syncs or paths.SYNCS_FILE
    try:
        syncs = load_syncs(syncs_file)
    except ConfigError as error:
        raise CliError(str(error)) from error
    if args.name:
        chosen = [s for s in syncs if s.name == args.name]
        if not chosen:
            names = ", ".join(s.name for s in syncs)
            raise CliError(f"no sync named '{args.name}' in {syncs_file} (syncs: {names})")
        if not chosen[0].enabled:
            raise CliError(
                f"sync '{args.name}' is disabled in {syncs_file} (enabled: false): "
                "set enabled: true (and its secrets' environment variables) to run it"
            )
        syncs = chosen
    else:
        for sync in syncs:
            if not sync.enabled:
                print(f"{sync.name}: skipped (enabled: false in {syncs_file.name})")
        syncs = [s for s in syncs if s.enabled]
    if not warehouse.exists():
        raise CliError(f"no warehouse at {warehouse}: run `cdp run` first")
    failures = 0
    try:
        with connect(warehouse) as con:
            for sync in syncs:
                try:
                    result = run_sync(con, sync, base_dir=warehouse.parent, dry_run=args.dry_run)
                except SyncError as error:
                    failures += 1
                    print(f"{sync.name}: failed: {error}", file=sys.stderr)
                    continue
                if args.dry_run:
                    print(
                        f"{sync.name}: would add {result.added:,}, change {result.changed:,}, "
                        f"remove {result.removed:,} (mode {sync.mode}, "
                        f"{sync.destination.type} destination); nothing sent"
                    )
                    for operation in result.preview:
                        print(f"  {operation.op:<6} {redact(operation.key)}")
                    if result.planned > len(result.preview):
                        print(f"  ... and {result.planned - len(result.preview):,} more")
                    continue
                print(
                    f"{sync.name}: {result.status}: {result.added:,} added, "
                    f"{result.changed:,} changed, {result.removed:,} removed, "
                    f"{result.failed:,} failed in {result.duration_seconds:.2f}s"
                    + (f" -> {result.output}" if result.output else "")
                )
                if result.failed:
                    print(f"  {result.error}")
    except (WarehouseError, SyncError, ConfigError) as error:
        raise CliError(str(error)) from error
    if not args.dry_run:
        publish(warehouse)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
