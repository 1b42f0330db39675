"""Reverse ETL: config validation, the diff engine and the file destination."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from reverse_etl.config import ConfigError, Consent, DestinationConfig, SyncConfig, load_syncs
from reverse_etl.destinations import DESTINATIONS, DestinationError, FileDestination
from reverse_etl.destinations.base import Batch, Operation, RowResult, SyncContext
from reverse_etl.engine import SyncError, plan_sync, run_sync

REPO = Path(__file__).resolve().parents[1]
FIELDS = ["customer_id", "email", "first_name", "last_name", "lifetime_revenue"]

CUSTOMERS = [
    (1, "ada@example.com", "Ada", "Lovelace", Decimal("1200.50"), 4),
    (2, "alan@example.com", "Alan", "Turing", Decimal("980.00"), 3),
    (3, "grace@example.com", "Grace", "Hopper", Decimal("2300.10"), 7),
    (4, "edsger@example.com", "Edsger", "Dijkstra", Decimal("640.99"), 2),
    (5, "barbara@example.com", "Barbara", "Liskov", Decimal("1500.00"), 5),
]


# --------------------------------------------------------------------------- helpers


@pytest.fixture(params=["file", "attached"])
def con(request, tmp_path: Path):
    """A warehouse file opened directly, or attached and USEd as orchestration does."""
    if request.param == "file":
        connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    else:
        connection = duckdb.connect()
        connection.execute(f"ATTACH '{tmp_path / 'cdp.duckdb'}' AS warehouse")
        connection.execute("USE warehouse")
    connection.execute("CREATE SCHEMA segments")
    connection.execute(
        """CREATE TABLE segments.high_value_customers (
            customer_id INTEGER, email VARCHAR, first_name VARCHAR, last_name VARCHAR,
            lifetime_revenue DECIMAL(18, 2), order_count INTEGER)"""
    )
    connection.executemany(
        "INSERT INTO segments.high_value_customers VALUES (?, ?, ?, ?, ?, ?)", CUSTOMERS
    )
    yield connection
    connection.close()


def make_sync(
    fmt: str = "jsonl", model: str = "high_value_customers", mode: str = "mirror", **settings
) -> SyncConfig:
    return SyncConfig(
        name="high_value_customers_file",
        model=model,
        primary_key="customer_id",
        destination=DestinationConfig(
            type="file",
            settings={"format": fmt, "path": "exports/high_value_customers", **settings},
        ),
        fields={name: name for name in FIELDS},
        mode=mode,
    )


def export_dir(tmp_path: Path) -> Path:
    return tmp_path / "exports" / "high_value_customers"


def exported_files(tmp_path: Path) -> list[Path]:
    folder = export_dir(tmp_path)
    return sorted(folder.iterdir()) if folder.exists() else []


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def state(con) -> dict[str, dict]:
    rows = con.execute("SELECT record_key, fields FROM reverse_etl.sync_state").fetchall()
    return {key: json.loads(fields) for key, fields in rows}


def runs(con) -> list[tuple]:
    return con.execute(
        "SELECT status, planned, added, changed, removed, failed, error"
        " FROM reverse_etl.sync_runs ORDER BY started_at"
    ).fetchall()


def change_one_add_one_remove_one(con) -> None:
    con.execute(
        "UPDATE segments.high_value_customers SET email = 'ada@new.example' WHERE customer_id = 1"
    )
    con.execute(
        "INSERT INTO segments.high_value_customers"
        " VALUES (6, 'ken@example.com', 'Ken', 'Thompson', 870.00, 2)"
    )
    con.execute("DELETE FROM segments.high_value_customers WHERE customer_id = 4")


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "reverse_etl" / "syncs.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


VALID_SYNC = """\
syncs:
  - name: high_value_customers_file
    model: high_value_customers
    primary_key: customer_id
    mode: mirror
    destination:
      type: file
      format: jsonl
      path: exports/high_value_customers
    fields:
      customer_id: customer_id
      email: email
"""


# --------------------------------------------------------------------------- syncing


def test_first_sync_sends_every_row_as_an_upsert(con, tmp_path):
    result = run_sync(con, make_sync(), base_dir=tmp_path)

    assert (result.status, result.planned, result.added, result.failed) == ("succeeded", 5, 5, 0)
    [path] = exported_files(tmp_path)
    assert result.output == str(path)
    assert re.fullmatch(
        rf"high_value_customers_file-\d{{8}}T\d{{6}}\.\d{{6}}Z-{result.run_id[:8]}\.jsonl",
        path.name,
    )
    lines = read_jsonl(path)
    assert [line["key"] for line in lines] == ["1", "2", "3", "4", "5"]
    assert {line["op"] for line in lines} == {"upsert"}
    assert lines[0]["fields"] == {
        "customer_id": 1,
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "lifetime_revenue": 1200.5,
    }
    assert set(state(con)) == {"1", "2", "3", "4", "5"}
    # the run's plan table is gone once the run is folded into the state
    assert con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'reverse_etl'"
        " AND table_catalog = current_database() ORDER BY 1"
    ).fetchall() == [("sync_batches",), ("sync_row_errors",), ("sync_runs",), ("sync_state",)]


def test_a_second_run_without_changes_sends_nothing_and_writes_no_file(con, tmp_path):
    run_sync(con, make_sync(), base_dir=tmp_path)

    result = run_sync(con, make_sync(), base_dir=tmp_path)

    assert (result.status, result.planned, result.output) == ("succeeded", 0, None)
    assert len(exported_files(tmp_path)) == 1


def test_changing_adding_and_removing_rows_sends_exactly_those_three_operations(con, tmp_path):
    run_sync(con, make_sync(), base_dir=tmp_path)
    change_one_add_one_remove_one(con)

    result = run_sync(con, make_sync(), base_dir=tmp_path)

    assert (result.added, result.changed, result.removed, result.planned) == (1, 1, 1, 3)
    lines = read_jsonl(result.output)
    assert [(line["op"], line["key"]) for line in lines] == [
        ("upsert", "1"),
        ("upsert", "6"),
        ("delete", "4"),
    ]
    assert lines[0]["fields"]["email"] == "ada@new.example"
    assert lines[1]["fields"]["first_name"] == "Ken"
    # a delete carries the last values delivered for that row
    assert lines[2]["fields"]["email"] == "edsger@example.com"
    assert set(state(con)) == {"1", "2", "3", "5", "6"}
    assert state(con)["1"]["email"] == "ada@new.example"


def test_operations_are_split_into_batches_of_the_destination_batch_size(
    con, tmp_path, monkeypatch
):
    writes: list[int] = []
    original = FileDestination.write

    def counting_write(self, batch):
        writes.append(len(batch))
        return original(self, batch)

    monkeypatch.setattr(FileDestination, "write", counting_write)

    result = run_sync(con, make_sync(batch_size=2), base_dir=tmp_path)

    assert writes == [2, 2, 1]
    assert result.batches == 3
    assert con.execute(
        "SELECT batch_no, first_seq, last_seq, failed FROM reverse_etl.sync_batches"
        " ORDER BY batch_no"
    ).fetchall() == [(1, 1, 2, 0), (2, 3, 4, 0), (3, 5, 5, 0)]
    assert [line["key"] for line in read_jsonl(result.output)] == ["1", "2", "3", "4", "5"]


class ExplodingFileDestination(FileDestination):
    """The real file destination, except the second batch fails as a whole."""

    def write(self, batch: Batch) -> list[RowResult]:
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 2:
            raise DestinationError("remote end hung up")
        return super().write(batch)


def test_a_destination_that_raises_leaves_state_untouched_and_the_next_run_resends_the_same_changes(
    con, tmp_path, monkeypatch
):
    run_sync(con, make_sync(), base_dir=tmp_path)
    state_before = state(con)
    change_one_add_one_remove_one(con)
    monkeypatch.setitem(DESTINATIONS, "file", ExplodingFileDestination)

    with pytest.raises(SyncError) as failure:
        run_sync(con, make_sync(batch_size=2), base_dir=tmp_path)

    message = str(failure.value)
    assert "high_value_customers_file" in message
    assert "remote end hung up" in message
    assert state(con) == state_before
    assert len(exported_files(tmp_path)) == 1  # no new file, no .tmp left behind
    assert runs(con)[-1][:6] == ("failed", 3, 1, 1, 1, 3)
    assert "remote end hung up" in runs(con)[-1][6]
    assert failure.value.result.status == "failed"

    monkeypatch.setitem(DESTINATIONS, "file", FileDestination)
    result = run_sync(con, make_sync(), base_dir=tmp_path)

    assert [(line["op"], line["key"]) for line in read_jsonl(result.output)] == [
        ("upsert", "1"),
        ("upsert", "6"),
        ("delete", "4"),
    ]


class RejectingFileDestination(FileDestination):
    """The real file destination, except it rejects customer 3 (like an API would)."""

    def write(self, batch: Batch) -> list[RowResult]:
        rejected = [op for op in batch if op.key == "3"]
        kept = [op for op in batch if op.key != "3"]
        super().write(Batch(batch.id, batch.number, kept))
        return [RowResult(op.key, False, "invalid email") for op in rejected]


def test_a_row_the_destination_rejects_is_resent_next_run_while_the_others_are_not(
    con, tmp_path, monkeypatch
):
    monkeypatch.setitem(DESTINATIONS, "file", RejectingFileDestination)

    first = run_sync(con, make_sync(), base_dir=tmp_path)

    assert (first.status, first.planned, first.delivered, first.failed) == ("partial", 5, 4, 1)
    assert first.row_errors == [RowResult("3", False, "invalid email")]
    assert "invalid email" in first.error
    assert set(state(con)) == {"1", "2", "4", "5"}
    assert con.execute(
        "SELECT run_id, record_key, operation, error FROM reverse_etl.sync_row_errors"
    ).fetchall() == [(first.run_id, "3", "upsert", "invalid email")]

    monkeypatch.setitem(DESTINATIONS, "file", FileDestination)
    second = run_sync(con, make_sync(), base_dir=tmp_path)

    assert (second.added, second.planned, second.failed) == (1, 1, 0)
    assert [(line["op"], line["key"]) for line in read_jsonl(second.output)] == [("upsert", "3")]
    assert set(state(con)) == {"1", "2", "3", "4", "5"}


def test_a_dry_run_sends_nothing_and_changes_no_state(con, tmp_path):
    run_sync(con, make_sync(), base_dir=tmp_path)
    change_one_add_one_remove_one(con)
    state_before = state(con)

    result = run_sync(con, make_sync(), base_dir=tmp_path, dry_run=True)

    assert (result.status, result.added, result.changed, result.removed) == ("dry_run", 1, 1, 1)
    assert [(op.op, op.key) for op in result.preview] == [
        ("upsert", "1"),
        ("upsert", "6"),
        ("delete", "4"),
    ]
    assert result.output is None
    assert state(con) == state_before
    assert len(exported_files(tmp_path)) == 1
    assert runs(con)[-1][:6] == ("dry_run", 3, 1, 1, 1, 0)
    # the plan is still pending: a real run sends it
    assert run_sync(con, make_sync(), base_dir=tmp_path).planned == 3


def test_plan_sync_reads_operations_in_batches_and_leaves_no_temp_table_after_close(con):
    with plan_sync(con, make_sync()) as plan:
        batches = list(plan.batches(2))
        assert [len(batch) for batch in batches] == [2, 2, 1]
        assert [batch.number for batch in batches] == [1, 2, 3]
        assert [op.key for op in plan.operations()] == ["1", "2", "3", "4", "5"]
        # the same operations make the same batch and operation ids (idempotency keys)
        assert [b.id for b in plan.batches(2)] == [b.id for b in batches]
        assert len({op.id for op in plan.operations()}) == 5
        table = plan.table

    leftover = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [table]
    ).fetchone()[0]
    assert leftover == 0


def test_state_is_kept_per_sync(con, tmp_path):
    other = dataclasses.replace(make_sync(), name="other_sync")
    run_sync(con, make_sync(), base_dir=tmp_path)

    assert plan_sync(con, other).added == 5
    assert plan_sync(con, make_sync()).planned == 0


def test_a_new_unmapped_column_in_the_model_does_not_break_the_sync(con, tmp_path):
    run_sync(con, make_sync(), base_dir=tmp_path)
    con.execute("ALTER TABLE segments.high_value_customers ADD COLUMN churn_score DOUBLE")
    con.execute("UPDATE segments.high_value_customers SET churn_score = 0.5")

    result = run_sync(con, make_sync(), base_dir=tmp_path)

    assert (result.status, result.planned) == ("succeeded", 0)


def test_a_model_can_be_named_as_schema_dot_table(con, tmp_path):
    result = run_sync(con, make_sync(model="segments.high_value_customers"), base_dir=tmp_path)

    assert result.added == 5


def test_csv_format_writes_op_key_then_the_fields(con, tmp_path):
    run_sync(con, make_sync("csv"), base_dir=tmp_path)
    change_one_add_one_remove_one(con)

    result = run_sync(con, make_sync("csv"), base_dir=tmp_path)

    assert result.output.endswith(".csv")
    with open(result.output, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["op", "key", *FIELDS]
    assert rows[1:] == [
        ["upsert", "1", "1", "ada@new.example", "Ada", "Lovelace", "1200.50"],
        ["upsert", "6", "6", "ken@example.com", "Ken", "Thompson", "870.00"],
        ["delete", "4", "4", "edsger@example.com", "Edsger", "Dijkstra", "640.99"],
    ]


def test_jsonl_serializes_dates_timestamps_decimals_and_nan_sensibly(con, tmp_path):
    con.execute(
        """CREATE TABLE segments.typed AS SELECT 1 AS id, DATE '2024-02-29' AS signup_date,
           TIMESTAMPTZ '2024-03-01 10:00:00+00' AS seen_at, 12.30::DECIMAL(10, 2) AS amount,
           'nan'::DOUBLE AS score, ['a', 'b'] AS tags, NULL::VARCHAR AS nothing"""
    )
    sync = SyncConfig(
        name="typed",
        model="typed",
        primary_key="id",
        destination=DestinationConfig("file", {"path": "exports/typed"}),
        fields={
            "id": "id",
            "signup": "signup_date",
            "seen_at": "seen_at",
            "amount": "amount",
            "score": "score",
            "tags": "tags",
            "nothing": "nothing",
        },
    )

    result = run_sync(con, sync, base_dir=tmp_path)

    [line] = read_jsonl(result.output)
    fields = line["fields"]
    assert fields["signup"] == "2024-02-29"
    assert fields["seen_at"] == "2024-03-01T10:00:00.000000Z"
    assert fields["amount"] == 12.3
    assert fields["score"] is None
    assert fields["tags"] == ["a", "b"]
    assert fields["nothing"] is None
    assert json.loads(con.execute("SELECT fields FROM reverse_etl.sync_state").fetchone()[0]) == (
        fields
    )


def test_the_file_destination_also_encodes_hand_built_operations(tmp_path):
    context = SyncContext("manual", "0123456789abcdef", tmp_path, field_names=("amount", "day"))
    destination = FileDestination({"path": "out"}, context)
    destination.check_connection()

    failures = destination.write(
        Batch(
            "b1",
            1,
            [
                Operation.of("upsert", "1", {"amount": Decimal("1.10"), "day": date(2024, 1, 31)}),
                Operation.of("upsert", "2", {"amount": float("nan"), "day": None}),
            ],
        )
    )
    FileDestination.commit(destination.prepare())
    destination.close()

    assert failures == []
    assert read_jsonl(destination.output) == [
        {"op": "upsert", "key": "1", "fields": {"amount": 1.1, "day": "2024-01-31"}},
        {"op": "upsert", "key": "2", "fields": {"amount": None, "day": None}},
    ]
    assert Path(destination.output).name.endswith("-01234567.jsonl")


def test_a_discarded_file_run_leaves_no_file_behind(tmp_path):
    destination = FileDestination({"path": "out"}, SyncContext("manual", "abc", tmp_path))
    destination.write(Batch("b1", 1, [Operation.of("upsert", "1", {"a": 1})]))

    destination.close()

    assert list((tmp_path / "out").iterdir()) == []
    assert destination.output is None


def test_sync_runs_records_the_counts_of_every_run(con, tmp_path):
    run_sync(con, make_sync(), base_dir=tmp_path)
    change_one_add_one_remove_one(con)
    run_sync(con, make_sync(), base_dir=tmp_path, dry_run=True)
    run_sync(con, make_sync(), base_dir=tmp_path)
    run_sync(con, make_sync(), base_dir=tmp_path)

    assert runs(con) == [
        ("succeeded", 5, 5, 0, 0, 0, None),
        ("dry_run", 3, 1, 1, 1, 0, None),
        ("succeeded", 3, 1, 1, 1, 0, None),
        ("succeeded", 0, 0, 0, 0, 0, None),
    ]
    durations = con.execute(
        "SELECT count(*) FROM reverse_etl.sync_runs"
        " WHERE duration_seconds >= 0 AND finished_at >= started_at"
    ).fetchone()[0]
    assert durations == 4


# --------------------------------------------------------------------------- model errors


def test_a_missing_model_fails_with_a_hint_to_run_the_pipeline_and_is_logged(con, tmp_path):
    with pytest.raises(SyncError, match=r"'high_value_customers_file'.*'nope'.*run the pipeline"):
        run_sync(con, make_sync(model="nope"), base_dir=tmp_path)

    assert runs(con)[-1][0] == "failed"
    assert runs(con)[-1][:6] == ("failed", 0, 0, 0, 0, 0)  # nothing was planned
    assert "run the pipeline" in runs(con)[-1][6]


def test_an_ambiguous_model_name_asks_to_qualify_it_as_schema_dot_table(con, tmp_path):
    con.execute("CREATE SCHEMA marts")
    con.execute("CREATE TABLE marts.high_value_customers AS SELECT 1 AS customer_id")

    with pytest.raises(SyncError, match=r"ambiguous.*marts.*segments.*qualify it as schema\.table"):
        plan_sync(con, make_sync())


def test_raw_and_reverse_etl_schemas_are_not_searched_for_models(con, tmp_path):
    con.execute("CREATE SCHEMA raw")
    con.execute("CREATE TABLE raw.high_value_customers AS SELECT 1 AS customer_id")

    assert plan_sync(con, make_sync()).model == "segments.high_value_customers"


def test_a_mapped_column_missing_from_the_model_is_named_with_the_model_columns(con, tmp_path):
    sync = make_sync()
    sync.fields["phone"] = "phone_number"

    with pytest.raises(SyncError) as failure:
        plan_sync(con, sync)

    message = str(failure.value)
    assert "'phone_number' (for field 'phone')" in message
    assert "customer_id, email, first_name, last_name, lifetime_revenue, order_count" in message


def test_null_primary_keys_are_refused_with_their_count(con, tmp_path):
    con.execute("INSERT INTO segments.high_value_customers (customer_id, email) VALUES (NULL, 'a')")
    con.execute("INSERT INTO segments.high_value_customers (customer_id, email) VALUES (NULL, 'b')")

    with pytest.raises(SyncError, match=r"2 row\(s\) with a NULL primary key 'customer_id'"):
        run_sync(con, make_sync(), base_dir=tmp_path)
    assert exported_files(tmp_path) == []


def test_duplicate_primary_keys_are_refused_with_a_sample_key(con, tmp_path):
    con.execute("INSERT INTO segments.high_value_customers (customer_id, email) VALUES (2, 'x')")

    with pytest.raises(SyncError, match=r"not unique.*1 key\(s\).*'2', 2 rows"):
        run_sync(con, make_sync(), base_dir=tmp_path)


def test_an_unwritable_destination_path_fails_the_run_with_a_clear_message(con, tmp_path):
    (tmp_path / "exports").write_text("a file where the folder should be")

    with pytest.raises(SyncError, match=r"high_value_customers_file.*cannot create folder"):
        run_sync(con, make_sync(), base_dir=tmp_path)
    assert state(con) == {}


# --------------------------------------------------------------------------- config


def test_the_shipped_syncs_file_is_valid():
    syncs = load_syncs(REPO / "reverse_etl" / "syncs.yml")

    # the one enabled sync needs no secret, so that `make run` works on a fresh machine
    [sync] = [s for s in syncs if s.enabled]
    assert sync.name == "high_value_customers_file"
    assert sync.destination == DestinationConfig(
        "file", {"format": "jsonl", "path": "exports/high_value_customers"}
    )
    assert (sync.mode, sync.key_field) == ("mirror", "customer_id")
    assert list(sync.fields) == FIELDS
    # one example of every destination type, disabled until its secrets are set
    assert {s.destination.type for s in syncs} == set(DESTINATIONS)


def test_fields_may_be_a_list_of_column_names(tmp_path):
    path = write_config(
        tmp_path,
        VALID_SYNC.replace(
            "      customer_id: customer_id\n      email: email\n",
            "      - customer_id\n      - email\n",
        ),
    )

    [sync] = load_syncs(path)

    assert sync.fields == {"customer_id": "customer_id", "email": "email"}


def test_a_missing_primary_key_names_the_file_the_sync_the_key_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path, VALID_SYNC.replace("    primary_key: customer_id\n", ""))

    with pytest.raises(ConfigError) as failure:
        load_syncs(Path("reverse_etl/syncs.yml"))

    assert str(failure.value) == (
        "reverse_etl/syncs.yml: syncs[0] (high_value_customers_file): 'primary_key' is missing: "
        "name the model column that identifies a row"
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    primary_key: customer_id\n",
            "    primary_key: customer_id\n    primry_key: x\n",
            "unknown key 'primry_key': did you mean 'primary_key'? allowed keys are",
        ),
        (
            "      type: file\n",
            "      type: ftp\n",
            "'destination.type' 'ftp' is not supported: use one of file, webhook, postgres",
        ),
        (
            "      format: jsonl\n",
            "      format: xml\n",
            "'destination.format' is 'xml': use one of jsonl, csv, parquet",
        ),
        (
            "      path: exports/high_value_customers\n",
            "      path: exports/high_value_customers\n      compress: true\n",
            "'destination.compress' is not a setting of this destination type: remove it",
        ),
        (
            "      path: exports/high_value_customers\n",
            "",
            "'destination.path' is missing: set it to the folder to write files into",
        ),
        (
            "    fields:\n      customer_id: customer_id\n      email: email\n",
            "",
            "'fields' is missing: map destination fields to model columns",
        ),
        (
            "      customer_id: customer_id\n",
            "",
            (
                "'primary_key' column 'customer_id' is not among the mapped columns (email): "
                "add it to 'fields'"
            ),
        ),
        (
            "      email: email\n",
            "      email: email\n      email: email_address\n",
            "duplicate key 'email'",
        ),
        (
            "    model: high_value_customers\n",
            "",
            "'model' is missing: name the dbt model (table) to sync",
        ),
        (
            "  - name: high_value_customers_file\n",
            "  - name: high value customers\n",
            "'name' 'high value customers' is not valid: use letters, digits",
        ),
    ],
    ids=[
        "unknown-key",
        "unknown-destination-type",
        "unsupported-format",
        "unknown-destination-setting",
        "missing-path",
        "missing-fields",
        "primary-key-not-mapped",
        "duplicate-yaml-key",
        "missing-model",
        "invalid-name",
    ],
)
def test_config_errors_name_the_file_the_key_and_the_fix(tmp_path, old, new, expected):
    assert old in VALID_SYNC
    path = write_config(tmp_path, VALID_SYNC.replace(old, new))

    with pytest.raises(ConfigError) as failure:
        load_syncs(path)

    message = str(failure.value)
    assert "syncs.yml" in message
    assert expected in message


def test_duplicate_sync_names_are_an_error_naming_the_first_use(tmp_path):
    text = VALID_SYNC + VALID_SYNC.split("syncs:\n", 1)[1]
    path = write_config(tmp_path, text)

    with pytest.raises(
        ConfigError,
        match=r"syncs\[1\] \(high_value_customers_file\): 'name'"
        r" 'high_value_customers_file' is already used by syncs\[0\]",
    ):
        load_syncs(path)


def test_every_config_problem_is_reported_at_once(tmp_path):
    path = write_config(
        tmp_path,
        VALID_SYNC.replace("    primary_key: customer_id\n", "").replace(
            "format: jsonl", "format: x"
        ),
    )

    with pytest.raises(ConfigError) as failure:
        load_syncs(path)

    assert len(failure.value.errors) == 2


def test_csv_fields_named_op_or_key_are_refused(tmp_path):
    path = write_config(
        tmp_path,
        VALID_SYNC.replace("format: jsonl", "format: csv").replace("email: email", "key: email"),
    )

    with pytest.raises(ConfigError, match="field 'key' clashes with the CSV column 'key'"):
        load_syncs(path)


def test_a_missing_or_broken_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_syncs(tmp_path / "nope.yml")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+: invalid YAML"):
        load_syncs(write_config(tmp_path, "syncs:\n  - name: [unclosed\n"))


# --------------------------------------------------------------------------- formats, modes


def test_parquet_format_writes_typed_columns(con, tmp_path):
    run_sync(con, make_sync("parquet"), base_dir=tmp_path)
    change_one_add_one_remove_one(con)

    result = run_sync(con, make_sync("parquet"), base_dir=tmp_path)

    assert result.output.endswith(".parquet")
    reader = duckdb.connect()
    assert reader.execute(f"DESCRIBE SELECT * FROM '{result.output}'").fetchall()[:7] == [
        ("op", "VARCHAR", "YES", None, None, None),
        ("key", "VARCHAR", "YES", None, None, None),
        ("customer_id", "INTEGER", "YES", None, None, None),
        ("email", "VARCHAR", "YES", None, None, None),
        ("first_name", "VARCHAR", "YES", None, None, None),
        ("last_name", "VARCHAR", "YES", None, None, None),
        ("lifetime_revenue", "DECIMAL(18,2)", "YES", None, None, None),
    ]
    assert reader.execute(
        f"SELECT op, key, email, lifetime_revenue FROM '{result.output}' ORDER BY op DESC, key"
    ).fetchall() == [
        ("upsert", "1", "ada@new.example", Decimal("1200.50")),
        ("upsert", "6", "ken@example.com", Decimal("870.00")),
        ("delete", "4", "edsger@example.com", Decimal("640.99")),
    ]
    assert [p.suffix for p in exported_files(tmp_path)] == [".parquet", ".parquet"]


def test_upsert_mode_never_sends_deletes_and_keeps_the_removed_row_in_state(con, tmp_path):
    run_sync(con, make_sync(mode="upsert"), base_dir=tmp_path)
    change_one_add_one_remove_one(con)

    result = run_sync(con, make_sync(mode="upsert"), base_dir=tmp_path)

    assert (result.added, result.changed, result.removed) == (1, 1, 0)
    assert [(o["op"], o["key"]) for o in read_jsonl(result.output)] == [
        ("upsert", "1"),
        ("upsert", "6"),
    ]
    # the destination still holds row 4 as last sent: coming back unchanged sends nothing
    assert "4" in state(con)
    con.execute(
        "INSERT INTO segments.high_value_customers"
        " VALUES (4, 'edsger@example.com', 'Edsger', 'Dijkstra', 640.99, 2)"
    )
    assert run_sync(con, make_sync(mode="upsert"), base_dir=tmp_path).planned == 0


def test_insert_mode_sends_only_rows_new_to_the_destination(con, tmp_path):
    run_sync(con, make_sync(mode="insert"), base_dir=tmp_path)
    change_one_add_one_remove_one(con)

    result = run_sync(con, make_sync(mode="insert"), base_dir=tmp_path)

    assert (result.added, result.changed, result.removed) == (1, 0, 0)
    assert [(o["op"], o["key"]) for o in read_jsonl(result.output)] == [("insert", "6")]
    # the insert-only destination keeps the first version of row 1
    assert state(con)["1"]["email"] == "ada@example.com"


def test_a_dropped_unmapped_column_does_not_break_the_sync(con, tmp_path):
    run_sync(con, make_sync(), base_dir=tmp_path)
    con.execute("ALTER TABLE segments.high_value_customers DROP COLUMN order_count")

    result = run_sync(con, make_sync(), base_dir=tmp_path)

    assert (result.status, result.planned) == ("succeeded", 0)


# --------------------------------------------------------------------------- consent


def with_consent(consent: Consent, mode: str = "mirror") -> SyncConfig:
    return dataclasses.replace(make_sync(mode=mode), consent=consent)


def test_only_rows_with_consent_are_sent_and_a_withdrawal_removes_the_row(con, tmp_path):
    con.execute("ALTER TABLE segments.high_value_customers ADD COLUMN has_email_opt_in BOOLEAN")
    con.execute("UPDATE segments.high_value_customers SET has_email_opt_in = customer_id <> 2")
    con.execute(
        "UPDATE segments.high_value_customers SET has_email_opt_in = NULL WHERE customer_id = 5"
    )
    sync = with_consent(Consent("has_email_opt_in"))

    first = run_sync(con, sync, base_dir=tmp_path)

    assert [o["key"] for o in read_jsonl(first.output)] == ["1", "3", "4"]  # NULL is no consent
    con.execute(
        "UPDATE segments.high_value_customers SET has_email_opt_in = false WHERE customer_id = 3"
    )
    second = run_sync(con, sync, base_dir=tmp_path)
    assert [(o["op"], o["key"]) for o in read_jsonl(second.output)] == [("delete", "3")]


def test_consent_can_name_a_column_that_is_true_when_the_person_refused(con, tmp_path):
    con.execute("ALTER TABLE segments.high_value_customers ADD COLUMN is_unsubscribed BOOLEAN")
    con.execute("UPDATE segments.high_value_customers SET is_unsubscribed = customer_id >= 4")

    result = run_sync(
        con, with_consent(Consent("is_unsubscribed", negated=True)), base_dir=tmp_path
    )

    assert [o["key"] for o in read_jsonl(result.output)] == ["1", "2", "3"]


def test_a_consent_column_the_model_lacks_or_that_is_not_boolean_is_refused(con, tmp_path):
    with pytest.raises(SyncError, match=r"'consent' names column 'has_sms_opt_in'.*does not have"):
        plan_sync(con, with_consent(Consent("has_sms_opt_in")))
    with pytest.raises(SyncError, match=r"'consent' column 'email' .* is VARCHAR, not BOOLEAN"):
        plan_sync(con, with_consent(Consent("email")))


# --------------------------------------------------------------------------- crash safety


class CrashBeforePublishing(FileDestination):
    """The real file destination; the process 'dies' after the engine recorded the
    delivery and before the file is renamed into place."""

    @classmethod
    def commit(cls, token: str) -> None:
        raise KeyboardInterrupt("killed")


def test_a_run_killed_between_recording_and_publishing_its_file_is_published_by_the_next_run(
    con, tmp_path, monkeypatch
):
    monkeypatch.setitem(DESTINATIONS, "file", CrashBeforePublishing)
    with pytest.raises(KeyboardInterrupt):
        run_sync(con, make_sync(), base_dir=tmp_path)
    [staged] = exported_files(tmp_path)
    assert staged.name.endswith(".jsonl.tmp")

    monkeypatch.setitem(DESTINATIONS, "file", FileDestination)
    result = run_sync(con, make_sync(), base_dir=tmp_path)

    # the staged file was published under the first run's name, nothing was sent twice
    assert result.planned == 0
    [published] = exported_files(tmp_path)
    assert published.name == staged.name.removesuffix(".tmp")
    assert [o["key"] for o in read_jsonl(published)] == ["1", "2", "3", "4", "5"]
    assert set(state(con)) == {"1", "2", "3", "4", "5"}


def test_a_staged_file_that_vanished_before_publishing_is_sent_again(con, tmp_path, monkeypatch):
    monkeypatch.setitem(DESTINATIONS, "file", CrashBeforePublishing)
    with pytest.raises(KeyboardInterrupt):
        run_sync(con, make_sync(), base_dir=tmp_path)
    for path in exported_files(tmp_path):
        path.unlink()

    monkeypatch.setitem(DESTINATIONS, "file", FileDestination)
    result = run_sync(con, make_sync(), base_dir=tmp_path)

    assert result.added == 5
    assert [o["key"] for o in read_jsonl(result.output)] == ["1", "2", "3", "4", "5"]


def test_a_file_left_staged_by_a_run_that_died_before_recording_it_is_removed(con, tmp_path):
    folder = export_dir(tmp_path)
    folder.mkdir(parents=True)
    orphan = folder / "high_value_customers_file-20260101T000000.000000Z-0123abcd.jsonl.tmp"
    orphan.write_text('{"op":"upsert","key":"1","fields":{}}\n')
    other_sync = folder / "other-20260101T000000.000000Z-0123abcd.jsonl.tmp"
    other_sync.write_text("")

    result = run_sync(con, make_sync(), base_dir=tmp_path)

    assert not orphan.exists()
    assert other_sync.exists()
    assert result.added == 5


class ReentrantFileDestination(FileDestination):
    """Starts the same sync again while a batch of it is being written."""

    def write(self, batch: Batch) -> list[RowResult]:
        try:
            run_sync(self.con, make_sync(), base_dir=self.context.base_dir)
        except SyncError as error:
            self.refusal = str(error)
        return super().write(batch)


def test_a_sync_cannot_run_twice_at_the_same_time(con, tmp_path, monkeypatch):
    instances: list[ReentrantFileDestination] = []

    def build(settings, context):
        destination = ReentrantFileDestination(settings, context)
        destination.con = con
        instances.append(destination)
        return destination

    monkeypatch.setitem(DESTINATIONS, "file", build)

    result = run_sync(con, make_sync(), base_dir=tmp_path)

    assert result.status == "succeeded"
    assert "already running" in instances[0].refusal


# --------------------------------------------------------------------------- config: new keys


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    mode: mirror\n",
            "",
            "'mode' is missing: choose one of upsert, update, insert, mirror, audience "
            "(a file destination supports mirror, upsert, insert)",
        ),
        (
            "    mode: mirror\n",
            "    mode: audience\n",
            "'mode' 'audience' is not supported here: a file destination supports mirror, "
            "upsert, insert",
        ),
        ("    mode: mirror\n", "    mode: sync\n", "'mode' 'sync' is not a mode: use one of"),
        (
            "    mode: mirror\n",
            "    mode: mirror\n    consent: email = 'yes'\n",
            "'consent' \"email = 'yes'\" is not valid: name a BOOLEAN column of the model",
        ),
        (
            "    mode: mirror\n",
            "    mode: mirror\n    schedule: every hour\n",
            "'schedule' 'every hour' is not a cron expression",
        ),
        (
            "    mode: mirror\n",
            "    mode: mirror\n    enabled: maybe\n",
            "'enabled' is 'maybe': use true or false",
        ),
        (
            "      path: exports/high_value_customers\n",
            "      path: exports/high_value_customers\n      batch_size: 0\n",
            "'destination.batch_size' is 0: it must be at least 1",
        ),
    ],
    ids=[
        "missing-mode",
        "mode-the-destination-lacks",
        "unknown-mode",
        "consent-not-a-column",
        "bad-schedule",
        "enabled-not-a-boolean",
        "batch-size-zero",
    ],
)
def test_new_sync_keys_are_validated_with_the_fix(tmp_path, old, new, expected):
    assert old in VALID_SYNC
    path = write_config(tmp_path, VALID_SYNC.replace(old, new))

    with pytest.raises(ConfigError) as failure:
        load_syncs(path)

    assert expected in str(failure.value)


def test_consent_schedule_and_enabled_are_read_from_the_file(tmp_path):
    path = write_config(
        tmp_path,
        VALID_SYNC.replace(
            "    mode: mirror\n",
            "    mode: mirror\n    consent: not is_unsubscribed_from_email\n"
            '    schedule: "*/30 * * * *"\n    enabled: false\n',
        ),
    )

    [sync] = load_syncs(path)

    assert sync.consent == Consent("is_unsubscribed_from_email", negated=True)
    assert (sync.schedule, sync.enabled) == ("*/30 * * * *", False)


@pytest.mark.parametrize(
    ("destination", "expected"),
    [
        (
            "      type: webhook\n      url: https://x.example/h\n      secret_env: my secret\n",
            "'destination.secret_env' is 'my secret': give the NAME of the environment "
            "variable that holds the secret (e.g. SECRET), never the secret itself",
        ),
        (
            "      type: webhook\n      url: ftp://x.example/h\n      secret_env: S\n",
            "'destination.url' 'ftp://x.example/h' is not an http(s) URL",
        ),
        (
            "      type: postgres\n      dsn_env: PG\n      table: a.b.c\n",
            "'destination.table' 'a.b.c' is not a plain table name",
        ),
        (
            "      type: audience\n      audience_id: '1'\n      access_token_env: T\n"
            "      default_country_code: 1\n",
            "'destination.default_country_code' is 1: give the calling code as a quoted string",
        ),
        (
            "      type: webhook\n      url: https://x.example/h\n      secret_env: S\n"
            "      timeout_seconds: soon\n",
            "'destination.timeout_seconds' is 'soon': give a number",
        ),
    ],
    ids=["secret-value-instead-of-name", "not-http", "table-name", "country-code", "timeout"],
)
def test_destination_settings_are_validated_with_the_fix(tmp_path, destination, expected):
    mode = "audience" if "audience" in destination else "mirror"
    text = (
        "syncs:\n  - name: s\n    model: m\n    primary_key: customer_id\n"
        f"    mode: {mode}\n    destination:\n{destination}"
        "    fields: [customer_id, email]\n"
    )

    with pytest.raises(ConfigError) as failure:
        load_syncs(write_config(tmp_path, text))

    assert expected in str(failure.value)


def test_a_secret_never_shows_its_value():
    from reverse_etl.destinations.base import Secret

    secret = Secret("HUBSPOT_ACCESS_TOKEN", "pat-na1-very-secret")

    assert "very-secret" not in repr(secret) + str(secret) + f"{secret}"
    assert repr(secret) == "Secret($HUBSPOT_ACCESS_TOKEN)"
    assert secret.reveal() == "pat-na1-very-secret"


def test_redact_masks_emails_and_phone_numbers_but_not_ids():
    from reverse_etl.pii import redact

    text = (
        "Email address Ana.Lima+promo@Example.co.uk is invalid; phone +1 (415) 555-0123 and "
        "0044 20 7946 0018 refused for cus_3f2a9b8c7d6e5f41 in run 1234567890abcdef"
    )

    assert redact(text) == (
        "Email address <email> is invalid; phone <phone> and <phone> refused for "
        "cus_3f2a9b8c7d6e5f41 in run 1234567890abcdef"
    )
