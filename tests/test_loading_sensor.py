"""The landing sensor notices the files the loader reads, crm/mapping.yml included."""

import os
from pathlib import Path

import dagster as dg

from orchestration.definitions import defs


def touch_later(path: Path, text: str) -> None:
    """Write ``text`` and move the modification time on (a same-size edit within a tick)."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_the_sensor_asks_for_a_run_when_crm_mapping_yml_appears_changes_or_goes(
    tmp_path, monkeypatch
):
    (tmp_path / "crm").mkdir()
    (tmp_path / "events").mkdir()
    (tmp_path / "crm" / "contacts.csv").write_text("Record ID,Email\n1,a@example.com\n")
    monkeypatch.setenv("CDP_LANDING_DIR", str(tmp_path))
    sensor = defs().resolve_sensor_def("new_landing_files")
    mapping = tmp_path / "crm" / "mapping.yml"

    with dg.instance_for_test() as instance:

        def tick(cursor: str | None) -> dg.SensorResult:
            return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor))

        first = tick(None)
        assert len(first.run_requests) == 1
        assert tick(first.cursor).run_requests == []

        touch_later(mapping, "contacts:\n  email: E-mail\n")
        added = tick(first.cursor)
        assert len(added.run_requests) == 1
        assert tick(added.cursor).run_requests == []

        touch_later(mapping, "contacts:\n  email: Mail 2\n")  # same size, later
        changed = tick(added.cursor)
        assert len(changed.run_requests) == 1

        mapping.unlink()
        removed = tick(changed.cursor)
        assert len(removed.run_requests) == 1
        assert removed.cursor == first.cursor  # back to the exports alone
