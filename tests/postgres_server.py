"""A real PostgreSQL server for the tests, started from the installed server binaries.

``postgres_server`` (session fixture, exposed through tests/conftest.py) runs ``initdb`` and
``pg_ctl start`` in a temporary folder, listening on 127.0.0.1 on a free port and on a unix
socket in that folder; it is stopped at the end of the session. ``initdb`` refuses to run
as root: as root the cluster belongs to the ``postgres`` user (``runuser``). Each test that
needs a database gets its own through ``PostgresServer.create_database``.

The server binaries come from the ``postgresql`` package (tests/system_packages.sh installs
it); without them the fixture fails with that instruction (tests never skip).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

USER = "cdp"


def _bin_dir() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): run "
            "`bash tests/system_packages.sh` as root, or `apt-get install -y postgresql`"
        )
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    folder: Path
    port: int
    bin_dir: Path

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(self.dsn(database), autocommit=True)

    def create_database(self) -> str:
        """A new empty database; returns its connection string."""
        name = f"test_{uuid.uuid4().hex[:12]}"
        with self.connect() as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run(
            [*prefix, *command], capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}{tail}"
            )

    def start(self) -> None:
        data = self.folder / "data"
        if not data.exists():
            self._run(
                str(self.bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            )
        options = f"-p {self.port} -h 127.0.0.1 -k {self.folder} -c fsync=off"
        options += " -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(self.folder / "server.log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.folder / "data"),
            "-m",
            "fast",
            "-w",
            "stop",
        )


def start_postgres() -> PostgresServer:
    # not under pytest's tmp dir: its parents are private to root, and the server runs as
    # the postgres user
    folder = Path(tempfile.mkdtemp(prefix="cdp-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    server = PostgresServer(folder=folder, port=_free_port(), bin_dir=_bin_dir())
    server.start()
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(server.folder, ignore_errors=True)
