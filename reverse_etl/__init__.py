"""Reverse ETL: push warehouse models (segments, marts) out to destinations.

A sync (declared in ``reverse_etl/syncs.yml``) maps a model's columns to destination
fields. Every run diffs the model against what the last successful runs delivered
(``reverse_etl.sync_state``) inside DuckDB and sends only what changed: rows added,
rows changed and rows removed. Each run is logged in ``reverse_etl.sync_runs``.

Modules:

- ``config``: ``syncs.yml`` loading and validation (``load_syncs``).
- ``engine``: the diff (``plan_sync``) and the run (``run_sync``), state tables.
- ``destinations``: the ``Destination`` interface and one module per destination type.
"""
