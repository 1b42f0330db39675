"""Normalizing what a user types, with the same SQL the dbt models use.

The normalization macros in dbt_project/macros/normalize_identifiers.sql are plain Jinja
(no adapter calls), so they are rendered here to SQL expressions and evaluated by DuckDB:
`cdp customer " Ana@X.COM "` finds what the models stored as `ana@x.com`.
"""

from functools import cache

import duckdb
import jinja2
import yaml

from orchestration.paths import DBT_PROJECT_DIR

IDENTIFIER_TYPES = ("user_id", "email", "phone", "crm_contact_id", "anonymous_id")
_MACRO_FOR_TYPE = {"email": "normalize_email", "phone": "normalize_phone"}


@cache
def _macros() -> jinja2.Template:
    project = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())
    variables = project.get("vars", {})
    environment = jinja2.Environment(extensions=["jinja2.ext.do"])
    environment.globals["var"] = lambda name, default=None: variables.get(name, default)
    source = (DBT_PROJECT_DIR / "macros" / "normalize_identifiers.sql").read_text()
    return environment.from_string(source).module


def normalization_sql(identifier_type: str, value_sql: str = "?") -> str:
    """The SQL expression that normalizes `value_sql` as an identifier of this type."""
    macro = getattr(_macros(), _MACRO_FOR_TYPE.get(identifier_type, "normalize_id"))
    return str(macro(value_sql)).strip()


def normalize(identifier_type: str, value: str) -> str | None:
    """The normalized identifier, or None when the value is not a usable identifier."""
    if identifier_type not in IDENTIFIER_TYPES:
        raise ValueError(
            f"Unknown identifier type '{identifier_type}': use one of {', '.join(IDENTIFIER_TYPES)}"
        )
    with duckdb.connect() as con:
        row = con.execute(
            f"select {normalization_sql(identifier_type, '$value')}", {"value": value}
        )
        return row.fetchone()[0]
