"""Dagster orchestration, the loader and the `cdp` command line."""
