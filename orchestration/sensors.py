"""Run the pipeline when files in the landing directory appear or change."""

import hashlib

import dagster as dg

from orchestration.jobs import cdp_pipeline
from orchestration.loading import landing_files
from orchestration.loading.mappings import LANDING_MAPPING
from orchestration.paths import landing_dir


def landing_fingerprint() -> str:
    """A digest of the landing files' names, sizes and modification times.

    ``crm/mapping.yml`` counts too: a changed mapping loads the CRM exports again.
    """
    root = landing_dir()
    digest = hashlib.sha256()
    mapping = root / LANDING_MAPPING
    for path in [*landing_files(root), *([mapping] if mapping.is_file() else [])]:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


@dg.sensor(
    name="new_landing_files",
    job=cdp_pipeline,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts the pipeline when an export file or crm/mapping.yml is added to or "
    "changed in the landing directory.",
)
def new_landing_files(context: dg.SensorEvaluationContext):
    if not landing_dir().exists():
        return dg.SkipReason(f"The landing directory {landing_dir()} does not exist.")
    fingerprint = landing_fingerprint()
    if fingerprint == context.cursor:
        return dg.SkipReason("No new or changed files in the landing directory.")
    context.update_cursor(fingerprint)
    return dg.RunRequest(run_key=fingerprint)
