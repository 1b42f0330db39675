import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration.paths import DBT_PROJECT_DIR
from orchestration.project import DBT_EXECUTABLE
from tests.postgres_server import postgres_server  # noqa: F401  (a real PostgreSQL, per session)

PROJECT_ROOT = Path(__file__).resolve().parent.parent

os.environ["GX_ANALYTICS_ENABLED"] = "false"
os.environ["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"


def run_cdp(*args: str, env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the real `cdp` command line in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "orchestration.cli", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def dbt(
    *args: str, warehouse: Path, target: Path, project: Path = DBT_PROJECT_DIR
) -> subprocess.CompletedProcess:
    """Run the real dbt (the one the pipeline runs) in ``project`` on ``warehouse``, with its
    own target folder."""
    return subprocess.run(
        [DBT_EXECUTABLE, *args, "--target-path", str(target)],
        cwd=project,
        env={**os.environ, "CDP_WAREHOUSE": str(warehouse)},
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture
def dagster_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    return home


@pytest.fixture(scope="session")
def two_runs(tmp_path_factory):
    """Two real `cdp run`s with new data in between, shared by the customer, segment and
    report tests (tests/customer_pipeline.py says what the data holds)."""
    from tests.customer_pipeline import run_twice

    return run_twice(tmp_path_factory.mktemp("customers"))


@pytest.fixture
def con(tmp_path: Path):
    """A connection to a fresh DuckDB warehouse file of the test's own."""
    import duckdb

    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    yield connection
    connection.close()


def rows(con, sql: str, params: list | None = None) -> list[tuple]:
    return con.execute(sql, params or []).fetchall()


def event(message_id: str, **fields) -> dict:
    """A track message with the required fields; a field given as None is left out."""
    message = {
        "messageId": message_id,
        "type": "track",
        "event": "Order Completed",
        "anonymousId": "anon-1",
        "timestamp": "2026-03-01T10:00:00Z",
    }
    message.update(fields)
    return {k: v for k, v in message.items() if v is not None}
