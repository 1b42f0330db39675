"""Connections to the DuckDB warehouse and its published copy.

DuckDB lets one process hold a file for writing and then nobody else may open it, so the
pipeline writes `cdp.duckdb` and, after each successful run, publishes a copy
(`cdp_published.duckdb`) that readers open instead: a run never blocks a reader and a
reader never blocks a run.
"""

import errno
import fcntl
import mmap
import os
from pathlib import Path

import duckdb

from orchestration.paths import published_path


class WarehouseError(RuntimeError):
    """The warehouse cannot be opened; the message says why and what to do."""


def connect(warehouse: Path) -> duckdb.DuckDBPyConnection:
    """Open the warehouse for writing (creating it and its folder on first use).

    The file is attached under the name `warehouse`, so that `cdp.customers` means the schema
    cdp even when the file is called cdp.duckdb.
    """
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect()
        con.execute(f"attach '{_quoted(warehouse)}' as warehouse")
        con.execute("use warehouse")
        return con
    except duckdb.IOException as error:
        if "lock" in str(error).lower():
            raise WarehouseError(
                f"{warehouse} is in use by another process (a pipeline run or a sync holds it). "
                "Wait for it to finish; read commands use the published copy instead."
            ) from error
        raise


def cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A new connection to the database of ``con`` (for another thread), in its current
    database and schema: a DuckDB cursor starts in the default one, the in-memory database,
    not in the attached warehouse."""
    database, schema = con.execute("SELECT current_database(), current_schema()").fetchall()[0]
    new = con.cursor()
    new.execute(f"USE {'.'.join(_identifier(name) for name in (database, schema))}")
    return new


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def connect_published(warehouse: Path) -> duckdb.DuckDBPyConnection:
    """Open the published copy read-only; fails with a hint when nothing was published yet."""
    published = published_path(warehouse)
    if not published.exists():
        raise WarehouseError(
            f"No published warehouse at {published}: run `cdp run` first "
            "(or pass the --warehouse you ran with)."
        )
    con = duckdb.connect()
    con.execute(f"attach '{_quoted(published)}' as warehouse (read_only)")
    con.execute("use warehouse")
    return con


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")


def publish(warehouse: Path) -> Path:
    """Copy the warehouse to its published path, on disk before it replaces the previous copy
    (atomically), and return that path."""
    with connect(warehouse) as con:
        con.execute("checkpoint warehouse")
    published = published_path(warehouse)
    staging = published.with_name(published.name + ".tmp")
    copy_file(warehouse, staging)
    os.replace(staging, published)
    return published


_O_DIRECT = getattr(os, "O_DIRECT", 0)  # Linux; other systems copy through the page cache


def copy_file(source: Path, target: Path, chunk_bytes: int = 64 << 20) -> None:
    """Copy source to target, writing past the page cache (O_DIRECT) where the file system
    allows it, and flush target to disk.

    At a million customers the warehouse is 7.5 GB. After an incremental run, a plain copy
    (shutil.copyfile) of it took 14-31 s here, nearly all of it kernel time spent putting the
    written pages through the page cache; with direct writes it took 3-8 s alone and 7-10 s
    in the pipeline, flushed (BENCHMARKS.md). Reads stay buffered: the pages dbt has just
    written are often still in memory.
    """
    buffer = mmap.mmap(-1, chunk_bytes)  # page-aligned, as O_DIRECT needs
    view = memoryview(buffer)
    reader = os.open(source, os.O_RDONLY)
    try:
        writer = _open_for_direct_writing(target)
        try:
            while filled := _fill(reader, buffer, view):
                if filled % mmap.PAGESIZE:  # the last piece: O_DIRECT writes whole blocks only
                    flags = fcntl.fcntl(writer, fcntl.F_GETFL)
                    fcntl.fcntl(writer, fcntl.F_SETFL, flags & ~_O_DIRECT)
                written = 0
                while written < filled:
                    written += os.write(writer, view[written:filled])
            os.fsync(writer)
        finally:
            os.close(writer)
    finally:
        os.close(reader)
        view.release()
        buffer.close()


def _open_for_direct_writing(path: Path) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        return os.open(path, flags | _O_DIRECT, 0o666)
    except OSError as error:
        if error.errno != errno.EINVAL:  # EINVAL: the file system refuses O_DIRECT
            raise
        return os.open(path, flags, 0o666)


def _fill(reader: int, buffer: mmap.mmap, view: memoryview) -> int:
    """Read into buffer until it is full or the file ends; the number of bytes read."""
    filled = 0
    while filled < len(buffer):
        read = os.readv(reader, [view[filled:]])
        if read == 0:
            break
        filled += read
    return filled
