"""Dagster assets: raw tables, dbt models, reverse-ETL syncs and the published copy."""
