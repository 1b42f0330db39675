"""The dbt project as Dagster sees it, and the dbt executable beside this Python."""

import subprocess
import sys
from functools import cache
from pathlib import Path

from dagster_dbt import DbtProject

from orchestration.paths import DBT_PROJECT_DIR

DBT_EXECUTABLE = str(Path(sys.executable).with_name("dbt"))


@cache
def dbt_project() -> DbtProject:
    """The DbtProject, with a manifest parsed whenever the project's files changed."""
    project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
    if _manifest_is_stale(project.manifest_path):
        parse = subprocess.run(
            [
                DBT_EXECUTABLE,
                "parse",
                "--quiet",
                "--project-dir",
                str(DBT_PROJECT_DIR),
                "--profiles-dir",
                str(DBT_PROJECT_DIR),
                "--target-path",
                str(project.target_path),
            ],
            capture_output=True,
            text=True,
            cwd=DBT_PROJECT_DIR,
        )
        if parse.returncode != 0:
            raise RuntimeError(
                f"dbt parse failed in {DBT_PROJECT_DIR}:\n{parse.stdout}{parse.stderr}"
            )
    return project


def _manifest_is_stale(manifest: Path) -> bool:
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    sources = [DBT_PROJECT_DIR / name for name in ("dbt_project.yml", "profiles.yml")]
    for folder in ("models", "macros", "seeds", "tests"):
        sources.extend((DBT_PROJECT_DIR / folder).rglob("*"))
    return any(path.is_file() and path.stat().st_mtime > built for path in sources)
