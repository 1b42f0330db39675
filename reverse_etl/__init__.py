"""Reverse ETL: push warehouse models (segments, marts) out to destinations.

A sync (declared in ``reverse_etl/syncs.yml``) maps a model's columns to destination
fields. Every run diffs the model against what was delivered (``reverse_etl.sync_state``)
inside DuckDB and sends only what changed, in the way the sync's mode says (upsert,
update, insert, mirror, audience). Each answered batch is journaled at once
(``reverse_etl.sync_batches``, ``reverse_etl.sync_row_errors``), so a run that dies
halfway is completed by the next one without losing or duplicating anything; every run
is logged in ``reverse_etl.sync_runs``. See docs/reverse_etl.md.

Modules:

- ``config``: ``syncs.yml`` loading and validation (``load_syncs``).
- ``engine``: the diff (``plan_sync``), the run (``run_sync``), the journal and recovery.
- ``destinations``: the ``Destination`` interface and one module per destination type.
- ``pii``: ``redact`` keeps emails and phone numbers out of logs and messages.
"""
