"""Hourly refresh of the whole pipeline."""

import dagster as dg

from orchestration.jobs import cdp_pipeline

hourly_refresh = dg.ScheduleDefinition(
    name="hourly_refresh",
    job=cdp_pipeline,
    cron_schedule="0 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
