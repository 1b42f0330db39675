"""Normalizing what a user types, with the rules and the SQL the dbt models use.

The identity rules (dbt_project/identity_rules.yml, or the file CDP_IDENTITY_RULES names)
are read by the loader of the dbt model identity_rules, imported here by path: one loader,
one set of error messages. The normalization macros in
dbt_project/macros/normalize_identifiers.sql are plain Jinja (no adapter calls), so they are
rendered here to SQL expressions and evaluated by DuckDB: `cdp customer " Ana@X.COM "` finds
what the models stored as `ana@x.com`.
"""

import importlib.util
import os
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

import duckdb
import jinja2

from orchestration.paths import DBT_PROJECT_DIR

RULES_MODEL = DBT_PROJECT_DIR / "models" / "identity" / "identity_rules.py"


def rules_path() -> Path:
    """The rules file: CDP_IDENTITY_RULES (relative to dbt_project/), else identity_rules.yml."""
    name = os.environ.get("CDP_IDENTITY_RULES") or "identity_rules.yml"
    return (DBT_PROJECT_DIR / name).resolve()


def rules_module() -> ModuleType:
    """dbt_project/models/identity/identity_rules.py, which holds the loader."""
    name = "cdp_identity_rules"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, RULES_MODEL)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def load_rules():
    """The validated identity rules (raises the loader's RulesError, a ValueError)."""
    path = rules_path()
    return _load_rules(path, path.stat().st_mtime_ns if path.exists() else 0)


@cache
def _load_rules(path: Path, modified: int):
    return rules_module().load_rules(path)


def identifier_types() -> tuple[str, ...]:
    """The identifier types of the rules, strongest first."""
    return tuple(load_rules().identifier_types)


def __getattr__(name: str):
    # IDENTIFIER_TYPES is read from the rules file when first asked for, not at import.
    if name == "IDENTIFIER_TYPES":
        return identifier_types()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@cache
def _macros() -> jinja2.Template:
    environment = jinja2.Environment(extensions=["jinja2.ext.do"])
    source = (DBT_PROJECT_DIR / "macros" / "normalize_identifiers.sql").read_text()
    return environment.from_string(source).module


def normalization_sql(identifier_type: str, value_sql: str = "?") -> str:
    """The SQL expression that normalizes `value_sql` as an identifier of this type."""
    rules = load_rules()
    if identifier_type not in rules.identifier_types:
        raise ValueError(
            f"Unknown identifier type '{identifier_type}': use one of "
            f"{', '.join(rules.identifier_types)} (the types of {rules.path})"
        )
    normalizer = rules.identifier_types[identifier_type].normalize
    country = rules.default_country_code
    return str(_macros().normalize_identifier(value_sql, f"'{normalizer}'", f"'{country}'")).strip()


def normalize(identifier_type: str, value: str) -> str | None:
    """The normalized identifier, or None when the value is not a usable identifier."""
    with duckdb.connect() as con:
        row = con.execute(
            f"select {normalization_sql(identifier_type, '$value')}", {"value": value}
        )
        return row.fetchone()[0]
