"""The great-expectations suites of the raw tables, and their validation (no Dagster here).

``validate_loaded_rows`` is what the Dagster check (``orchestration.checks``) runs, in a
child process: validating puts the checked columns of every new row in pandas frames (GiBs
at millions of rows), and memory a process has used stays with it, so the `cdp run`
process would otherwise carry it through the dbt models that follow.

The suites validate what the loader does not enforce row by row (formats, ranges,
uniqueness) and, as a safety net, what it does (required ids, accepted types). Only the
columns a suite needs, of the rows loaded since the last run whose checks had no critical
failure (``raw.quality_checked_through``), are read from the warehouse.
"""

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from orchestration.loading.schema import MESSAGE_TYPES_SQL, RAW_TABLES
from orchestration.warehouse import connect

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
EARLIEST_EVENT = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Rule:
    """One expectation of a suite, with the words the summary and the UI use for it."""

    says: str  # what is expected, in words
    severity: str  # critical | warning
    expectation: str  # the great-expectations class name
    kwargs: dict


@dataclass(frozen=True)
class Suite:
    table: str
    query: str  # the columns validated (one row per raw row), from the rows named validated
    rules: tuple[Rule, ...]


def suites(now: datetime) -> dict[str, Suite]:
    """The suites; event times are expected between 2000-01-01 and a day after ``now``."""
    record_id = Rule(
        "record_id is present", "critical", "ExpectColumnValuesToNotBeNull", {"column": "record_id"}
    )
    by_table = {
        "raw.events": Suite(
            "raw.events",
            # Whether each message id is present and unique, and the type accepted, are
            # computed here, over the rows validated: at 1M customers pandas took 16.7 s to
            # find the repeats among 19M ids (ExpectColumnValuesToBeUnique), and fetching the
            # ids another 6.7 s. The repeated ids are grouped first: a window counting every
            # id took 3.8-4.6 s against 2.6-2.8 s. Only counts are reported, so the type's
            # text is not fetched.
            "SELECT message_id IS NOT NULL AS has_message_id, "
            "message_id NOT IN (SELECT message_id FROM validated WHERE message_id IS NOT NULL "
            "GROUP BY message_id HAVING count(*) > 1) AS message_id_is_unique, "
            f"type IN ({MESSAGE_TYPES_SQL}) AS has_accepted_type, "
            "event_at, "
            "user_id IS NOT NULL OR anonymous_id IS NOT NULL AS has_user_or_anonymous_id, "
            "traits->>'email' AS trait_email FROM validated",
            (
                Rule(
                    "message_id is present",
                    "critical",
                    "ExpectColumnValuesToBeInSet",
                    {"column": "has_message_id", "value_set": [True]},
                ),
                Rule(
                    "type is an accepted message type",
                    "critical",
                    "ExpectColumnValuesToBeInSet",
                    {"column": "has_accepted_type", "value_set": [True]},
                ),
                Rule(
                    "userId or anonymousId is present",
                    "critical",
                    "ExpectColumnValuesToBeInSet",
                    {"column": "has_user_or_anonymous_id", "value_set": [True]},
                ),
                Rule(
                    "event_at is between 2000-01-01 and tomorrow",
                    "warning",
                    "ExpectColumnValuesToBeBetween",
                    {
                        "column": "event_at",
                        "min_value": EARLIEST_EVENT,
                        "max_value": now + timedelta(days=1),
                    },
                ),
                Rule(
                    "message_id is unique (duplicates are removed in staging)",
                    "warning",
                    "ExpectColumnValuesToBeInSet",
                    {"column": "message_id_is_unique", "value_set": [True]},
                ),
                Rule(
                    "traits.email looks like an email address",
                    "warning",
                    "ExpectColumnValuesToMatchRegex",
                    {"column": "trait_email", "regex": EMAIL_PATTERN},
                ),
            ),
        ),
        "raw.crm_contacts": Suite(
            "raw.crm_contacts",
            "SELECT record_id, nullif(trim(email), '') AS email FROM validated",
            (
                record_id,
                Rule(
                    "email looks like an email address in at least half of the rows "
                    "(else the mapping is likely wrong)",
                    "critical",
                    "ExpectColumnValuesToMatchRegex",
                    {"column": "email", "regex": EMAIL_PATTERN, "mostly": 0.5},
                ),
                Rule(
                    "email looks like an email address",
                    "warning",
                    "ExpectColumnValuesToMatchRegex",
                    {"column": "email", "regex": EMAIL_PATTERN},
                ),
            ),
        ),
    }
    for kind in ("companies", "deals", "tickets"):
        table = RAW_TABLES[kind]
        by_table[table] = Suite(table, "SELECT record_id FROM validated", (record_id,))
    return by_table


@dataclass(frozen=True)
class Outcome:
    rule: Rule
    success: bool
    unexpected: int
    checked: int  # rows with a value (null values are not checked, except by not-null rules)
    error: str | None = None  # great-expectations could not evaluate the expectation

    def describe(self) -> str:
        if self.error:
            return f"{self.rule.says}: could not be evaluated ({self.error})"
        verdict = "passed" if self.success else "FAILED"
        return (
            f"{self.rule.says}: {verdict} ({self.unexpected:,} of {self.checked:,} rows unexpected)"
        )


def suite_rows(con, suite: Suite, loaded_since: datetime | None = None) -> pd.DataFrame:
    """The columns a suite validates, of the rows loaded at or after ``loaded_since`` (or all):
    its query reads them as ``validated``."""
    where = "" if loaded_since is None else " WHERE _loaded_at >= $since"
    return con.execute(
        f"WITH validated AS NOT MATERIALIZED (SELECT * FROM {suite.table}{where}) {suite.query}",
        {} if loaded_since is None else {"since": loaded_since},
    ).df()


def import_great_expectations() -> None:
    """Import great-expectations without its usage analytics, and without the fingerprint of
    each batch (``validate`` uses it).

    great-expectations fingerprints every pandas batch smaller than its HASH_THRESHOLD (1 GB):
    a hash of every row, then md5, twice per validation, kept as batch metadata that nothing
    here reads. At a million customers that was 5.1 s of the 5.6 s spent validating raw.events'
    19M rows; the expectations themselves took 0.4 s. A threshold of 0 turns it off.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations  # noqa: F401
    from great_expectations.execution_engine import pandas_execution_engine

    pandas_execution_engine.HASH_THRESHOLD = 0


def validate(con, suite: Suite, frame: pd.DataFrame | None = None) -> list[Outcome]:
    """Validate one raw table against its suite with great-expectations: the rows of
    ``frame`` (from ``suite_rows``), or the whole table."""
    import_great_expectations()
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    if frame is None:
        frame = suite_rows(con, suite)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("raw")
        .add_dataframe_asset(suite.table)
        .add_batch_definition_whole_dataframe("whole table")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    expectations = gx.ExpectationSuite(
        name=suite.table,
        expectations=[
            getattr(gxe, rule.expectation)(
                severity=rule.severity, meta={"rule": index}, **rule.kwargs
            )
            for index, rule in enumerate(suite.rules)
        ],
    )
    result = batch.validate(expectations, result_format="BASIC")
    outcomes = []
    # great-expectations does not keep the suite's order in its results
    by_rule = {item.expectation_config.meta["rule"]: item for item in result.results}
    for index, rule in enumerate(suite.rules):
        item = by_rule[index]
        counts = item.result or {}
        error = (item.exception_info or {}).get("exception_message")
        checked = int(counts.get("element_count", 0)) - int(counts.get("missing_count") or 0)
        if rule.expectation == "ExpectColumnValuesToNotBeNull":
            checked = int(counts.get("element_count", 0))
        outcomes.append(
            Outcome(
                rule, bool(item.success), int(counts.get("unexpected_count") or 0), checked, error
            )
        )
    return outcomes


@dataclass(frozen=True)
class TableOutcome:
    table: str
    outcomes: list[Outcome]
    rows: int  # rows validated: those loaded since the last check without a critical failure

    @property
    def critical(self) -> bool:
        return any(not o.success and o.rule.severity == "critical" for o in self.outcomes)


def validate_loaded_rows(warehouse: Path, checked_at: datetime) -> list[TableOutcome]:
    """Validate every raw table's rows loaded since the last check without a critical
    failure; when none fails critically now, record ``checked_at`` as checked through, so
    rows that blocked a run are validated again, and block again, until they are fixed."""
    tables = suites(checked_at)
    with connect(warehouse) as con:
        con.execute(
            "CREATE TABLE IF NOT EXISTS raw.quality_checked_through "
            "(checked_through TIMESTAMPTZ NOT NULL)"
        )
        since = con.execute("SELECT max(checked_through) FROM raw.quality_checked_through")
        loaded_since = since.fetchone()[0] or datetime.fromtimestamp(0, UTC)
        results = []
        for table in RAW_TABLES.values():
            frame = suite_rows(con, tables[table], loaded_since)
            results.append(TableOutcome(table, validate(con, tables[table], frame), len(frame)))
            del frame
        if not any(result.critical for result in results):
            con.execute("INSERT INTO raw.quality_checked_through VALUES (?)", [checked_at])
    return results
