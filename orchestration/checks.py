"""Data quality of the raw tables: a great-expectations suite per table, as Dagster checks.

Each raw table has one asset check, ``great_expectations``, that validates the table against
its suite (``orchestration.expectations``) with great-expectations and reports every
expectation in the check's metadata (shown in the Dagster UI) and in `cdp run`'s summary.
Each expectation has a severity: ``critical`` ones make a failed check an ERROR, which, the
checks being blocking, stops the downstream models (dbt, syncs, publish) from building in
that run; a failure of ``warning`` ones only is a WARN, and the run goes on.

The validation runs in a child process, which returns its memory when it exits (see
``orchestration.expectations``). The raw tables' step starts that child (``prepare_validation``)
so that it imports great-expectations while the exports load."""

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime

import dagster as dg

from orchestration.expectations import Outcome, import_great_expectations, validate_loaded_rows
from orchestration.loading import RAW_TABLES
from orchestration.resources import CdpPaths

CHECK_NAME = "great_expectations"

# The validation child started by prepare_validation, importing great-expectations (about
# 2.4 s). A run executes its steps in one process (the job's in_process_executor), so the
# check's step finds the child its load step started. A failed import needs no handling here:
# the validation imports it again and reports the error.
_prepared: ProcessPoolExecutor | None = None


def _spawn_child() -> ProcessPoolExecutor:
    """A process for one validation (``spawn``: this process has threads)."""
    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))


def prepare_validation() -> None:
    """Start the validation child now and let it import great-expectations in the background;
    the next ``raw_data_quality`` in this process validates in it."""
    global _prepared
    if _prepared is None:
        _prepared = _spawn_child()
        _prepared.submit(import_great_expectations)


def _validation_child() -> ProcessPoolExecutor:
    """The prepared child, or a new one if none was prepared."""
    global _prepared
    child, _prepared = _prepared or _spawn_child(), None
    return child


def check_result(
    table: str, outcomes: list[Outcome], rows_validated: int | None = None
) -> dg.AssetCheckResult:
    """The Dagster result: ERROR when a critical expectation failed, else WARN on failure.
    rows_validated: how many rows were validated (loaded since the last passing check)."""
    failed = [o for o in outcomes if not o.success]
    critical = any(o.rule.severity == "critical" for o in failed)
    rows = "\n".join(
        f"| {o.rule.says} | {o.rule.severity} | {'passed' if o.success else 'FAILED'} | "
        f"{o.unexpected:,} | {o.checked:,} |"
        for o in outcomes
    )
    metadata = {
        "expectations": dg.MetadataValue.md(
            "| expectation | severity | result | unexpected rows | rows checked |\n"
            f"|---|---|---|---|---|\n{rows}"
        ),
        "expectations_passed": sum(o.success for o in outcomes),
        "expectations_failed": len(failed),
        "failed": dg.MetadataValue.json([o.describe() for o in failed]),
    }
    return dg.AssetCheckResult(
        asset_key=dg.AssetKey(table.split(".")),
        check_name=CHECK_NAME,
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR if critical else dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=(
            f"{len(outcomes) - len(failed)} of {len(outcomes)} expectations passed"
            + (
                f" on the {rows_validated:,} rows loaded since the last passing check"
                if rows_validated is not None
                else ""
            )
            + (f"; failed: {'; '.join(o.describe() for o in failed)}" if failed else "")
        ),
    )


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            CHECK_NAME,
            asset=dg.AssetKey(table.split(".")),
            blocking=True,
            description=f"great-expectations suite of {table}: critical expectations block "
            "the downstream models, warnings do not.",
        )
        for table in RAW_TABLES.values()
    ],
    name="raw_data_quality",
)
def raw_data_quality(context: dg.AssetCheckExecutionContext, paths: CdpPaths):
    """Validate every raw table with its great-expectations suite: the rows loaded since
    the last run whose checks found no critical failure (raw.quality_checked_through), so
    rows that blocked a run are validated again, and block again, until they are fixed.
    The validation runs in a child process (started early by ``prepare_validation``), which
    opens the warehouse itself and gives back its memory when it exits."""
    with _validation_child() as child:
        results = child.submit(
            validate_loaded_rows, paths.warehouse_path(), datetime.now(UTC)
        ).result()
    for result in results:
        for outcome in result.outcomes:
            if not outcome.success:
                severity = outcome.rule.severity  # critical | warning
                log = context.log.error if severity == "critical" else context.log.warning
                log(f"{result.table}: {severity}: {outcome.describe()}")
        yield check_result(result.table, result.outcomes, result.rows)


def quality_lines(run_id: str, instance: dg.DagsterInstance) -> list[str]:
    """One line per raw table: its check's outcome in run ``run_id`` (for `cdp run`)."""
    lines = []
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = record.dagster_event.event_specific_data
        if evaluation.check_name != CHECK_NAME:
            continue
        if evaluation.passed:
            verdict = "passed"
        else:
            verdict = "ERROR" if evaluation.severity == dg.AssetCheckSeverity.ERROR else "WARN"
        table = ".".join(evaluation.asset_key.path)
        lines.append(f"{table}: {verdict}: {evaluation.description}")
    return lines
