"""Publishing the warehouse: the copy that readers open is the warehouse, byte for byte."""

import os

import pytest

from orchestration.paths import published_path
from orchestration.warehouse import connect, connect_published, copy_file, publish

CHUNK = 1 << 20


@pytest.mark.parametrize(
    "size",
    [0, 4096, CHUNK, 2 * CHUNK + 4096 + 123],
    ids=["empty", "one block", "one chunk", "chunks and a tail that is not a whole block"],
)
def test_a_copy_has_the_same_bytes(tmp_path, size):
    source, target = tmp_path / "source.bin", tmp_path / "target.bin"
    content = os.urandom(size)
    source.write_bytes(content)

    copy_file(source, target, chunk_bytes=CHUNK)

    assert target.read_bytes() == content


def test_a_copy_over_a_longer_file_leaves_none_of_it(tmp_path):
    # A publish killed mid-copy leaves its .tmp behind, maybe longer than the next copy.
    source, target = tmp_path / "source.bin", tmp_path / "target.bin"
    content = os.urandom(CHUNK + 10)
    source.write_bytes(content)
    target.write_bytes(b"x" * (3 * CHUNK))

    copy_file(source, target, chunk_bytes=CHUNK)

    assert target.read_bytes() == content


def test_the_published_copy_is_the_warehouse_after_its_checkpoint(tmp_path):
    warehouse = tmp_path / "cdp.duckdb"
    with connect(warehouse) as con:
        con.execute("create schema cdp")
        con.execute("create table cdp.customers as select range as n from range(100000)")
    stale = published_path(warehouse).with_name(published_path(warehouse).name + ".tmp")
    stale.write_bytes(b"left by a publish that was killed" * 100000)

    published = publish(warehouse)

    assert published == published_path(warehouse)
    assert not stale.exists()
    assert published.read_bytes() == warehouse.read_bytes()
    with connect_published(warehouse) as con:
        assert con.execute("select count(*), sum(n) from cdp.customers").fetchone() == (
            100000,
            sum(range(100000)),
        )
