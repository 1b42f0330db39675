"""The identity rules of dbt_project/identity_rules.yml, validated, as one row.

This file is the dbt model `identity_rules` and the one loader of the rules file:
orchestration/identifiers.py imports it by path, so that `cdp customer` normalizes what a
user types with the rules the models use. Every mistake is reported with the file, the key
and how to fix it. identity_identifier_types and identity_blocklist unpack the JSON columns.
"""

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import yaml

RULES_FILE = "identity_rules.yml"  # relative to the dbt project folder (dbt runs there)
# CDP_IDENTITY_RULES may name another rules file (absolute, or relative to the dbt project).
NORMALIZERS = ("id", "lowercase_id", "email", "phone", "sha256")
BUILT_IN_TYPES = ("user_id", "email", "phone", "crm_contact_id", "anonymous_id")
EVENT_FIELD_ROOTS = ("traits", "context", "properties")
_TYPE_KEYS = (
    "description",
    "normalize",
    "priority",
    "max_per_customer",
    "people_level",
    "super_node_threshold",
    "event_fields",
)
_TOP_KEYS = (
    "version",
    "default_country_code",
    "super_node_threshold",
    "identifier_types",
    "never_link",
    "blocklist",
)
_TYPE_NAME = re.compile(r"[a-z][a-z0-9_]*")
_EVENT_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


class RulesError(ValueError):
    """A mistake in the rules file: the message names the file, the key and the fix."""


@dataclass(frozen=True)
class IdentifierType:
    name: str
    description: str
    normalize: str
    priority: int
    max_per_customer: int | None
    people_level: bool
    super_node_threshold: int
    never_links_with: tuple[str, ...]
    event_fields: tuple[str, ...]


@dataclass(frozen=True)
class BlockRule:
    identifier_type: str
    match_type: str  # exact (case-insensitive) or regex (full match)
    pattern: str
    reason: str


@dataclass(frozen=True)
class IdentityRules:
    path: Path
    default_country_code: str
    super_node_threshold: int
    identifier_types: dict[str, IdentifierType]  # in priority order
    blocklist: tuple[BlockRule, ...]  # "*" expanded to every type


def model(dbt, session):
    dbt.config(materialized="table")
    # Read when the model runs (dbt runs in the project folder), never cached by dbt's parser.
    rules = load_rules(Path(os.environ.get("CDP_IDENTITY_RULES") or RULES_FILE).resolve())
    return rules_relation(session, rules)


def rules_relation(
    session: duckdb.DuckDBPyConnection, rules: IdentityRules
) -> duckdb.DuckDBPyRelation:
    """One row: the scalar settings, and the types and blocklist as JSON arrays.

    A DuckDB relation, not a pandas frame: this model is first on the path of every build
    (the staging of events waits for it), and importing pandas took a quarter of a second
    of it.
    """
    types = [
        {
            "identifier_type": t.name,
            "description": t.description,
            "normalizer": t.normalize,
            "priority": t.priority,
            "max_per_customer": t.max_per_customer,
            "is_people_level": t.people_level,
            "super_node_threshold": t.super_node_threshold,
            "never_links_with": list(t.never_links_with),
            "event_fields": list(t.event_fields),
        }
        for t in rules.identifier_types.values()
    ]
    blocklist = [
        {
            "identifier_type": b.identifier_type,
            "match_type": b.match_type,
            "pattern": b.pattern,
            "reason": b.reason,
        }
        for b in rules.blocklist
    ]
    row = [
        str(rules.path),
        rules.default_country_code,
        rules.super_node_threshold,
        json.dumps(types),
        json.dumps(blocklist),
    ]
    return session.values(row).project(
        "col0::varchar as rules_file, col1::varchar as default_country_code, "
        "col2::bigint as super_node_threshold, col3::varchar as identifier_types, "
        "col4::varchar as blocklist"
    )


def load_rules(path: Path) -> IdentityRules:
    """Read and validate the rules file; raises RulesError naming the key and the fix."""
    check = _Checker(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RulesError(
            f"{path}: the identity rules file does not exist. Restore dbt_project/{RULES_FILE} "
            "from git, or point CDP_IDENTITY_RULES at your rules file."
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise RulesError(
            f"{path}{where}: not valid YAML: {getattr(error, 'problem', error)}. "
            "Fix the syntax there (indentation, quotes, a missing colon)."
        ) from None
    if not isinstance(document, dict):
        check.fail("", "the file must be a mapping of keys", "start from the shipped file")
    check.known_keys(document, "", _TOP_KEYS)
    if document.get("version") != 1:
        check.fail("version", f"is {document.get('version')!r}", "set `version: 1`")

    threshold = check.whole_number(document, "super_node_threshold", "", required=True)
    country = document.get("default_country_code")
    if isinstance(country, int):
        country = str(country)
    if not isinstance(country, str) or not re.fullmatch(r"[1-9][0-9]{0,2}", country):
        check.fail(
            "default_country_code",
            f"is {country!r}",
            'write a calling code of 1 to 3 digits in quotes, e.g. "1" (US) or "44" (UK)',
        )

    types = _identifier_types(check, document.get("identifier_types"), threshold)
    never_link = _never_link(check, document.get("never_link"), types)
    identifier_types = {
        name: IdentifierType(**{**fields, "never_links_with": tuple(sorted(never_link[name]))})
        for name, fields in sorted(types.items(), key=lambda item: item[1]["priority"])
    }
    blocklist = _blocklist(check, document.get("blocklist"), list(identifier_types))
    return IdentityRules(path, country, threshold, identifier_types, blocklist)


class _Checker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str, fix: str):
        where = f"{self.path}: {key}" if key else str(self.path)
        raise RulesError(f"{where}: {problem}; {fix}.")

    def known_keys(self, mapping: dict, key: str, known: tuple[str, ...]) -> None:
        for name in mapping:
            if name not in known:
                self.fail(
                    f"{key}.{name}" if key else str(name),
                    "is not a known key",
                    f"use one of {', '.join(known)} (check the spelling)",
                )

    def whole_number(self, mapping: dict, name: str, key: str, required: bool) -> int | None:
        value = mapping.get(name)
        full_key = f"{key}.{name}" if key else name
        if value is None and not required:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.fail(full_key, f"is {value!r}", "write a whole number of at least 1")
        return value


def _identifier_types(check: _Checker, section: Any, threshold: int) -> dict[str, dict]:
    if not isinstance(section, dict) or not section:
        check.fail(
            "identifier_types",
            "is missing or empty",
            "list at least one identifier type (see the shipped file)",
        )
    types: dict[str, dict] = {}
    priorities: dict[int, str] = {}
    for name, spec in section.items():
        key = f"identifier_types.{name}"
        if not isinstance(name, str) or not _TYPE_NAME.fullmatch(name):
            check.fail(key, "is not a valid type name", "use lowercase letters, digits and _")
        if not isinstance(spec, dict):
            check.fail(key, "must be a mapping", "give it normalize, priority and people_level")
        check.known_keys(spec, key, _TYPE_KEYS)
        normalize = spec.get("normalize")
        if normalize not in NORMALIZERS:
            check.fail(
                f"{key}.normalize", f"is {normalize!r}", f"use one of {', '.join(NORMALIZERS)}"
            )
        priority = check.whole_number(spec, "priority", key, required=True)
        if priority in priorities:
            check.fail(
                f"{key}.priority",
                f"{priority} is also the priority of {priorities[priority]}",
                "give each type its own priority (1 = strongest)",
            )
        priorities[priority] = name
        people_level = spec.get("people_level")
        if not isinstance(people_level, bool):
            check.fail(
                f"{key}.people_level",
                f"is {people_level!r}",
                "write true when a value names one person, else false",
            )
        description = spec.get("description", "")
        if not isinstance(description, str):
            check.fail(f"{key}.description", f"is {description!r}", "write a line of text")
        event_fields = spec.get("event_fields", [])
        if not isinstance(event_fields, list):
            check.fail(f"{key}.event_fields", f"is {event_fields!r}", "write a list of paths")
        for index, path in enumerate(event_fields):
            if (
                not isinstance(path, str)
                or not _EVENT_FIELD.fullmatch(path)
                or path.split(".")[0] not in EVENT_FIELD_ROOTS
            ):
                check.fail(
                    f"{key}.event_fields[{index}]",
                    f"is {path!r}",
                    "write a path starting with traits., context. or properties., "
                    "e.g. context.device.id",
                )
        if name not in BUILT_IN_TYPES and not event_fields:
            check.fail(
                key,
                "has no source",
                f"list event_fields to read it from (built-in types: {', '.join(BUILT_IN_TYPES)})",
            )
        types[name] = {
            "name": name,
            "description": description,
            "normalize": normalize,
            "priority": priority,
            "max_per_customer": check.whole_number(spec, "max_per_customer", key, required=False),
            "people_level": people_level,
            "super_node_threshold": check.whole_number(
                spec, "super_node_threshold", key, required=False
            )
            or threshold,
            "event_fields": tuple(event_fields),
        }
    return types


def _never_link(check: _Checker, section: Any, types: dict[str, dict]) -> dict[str, set[str]]:
    never = {name: set() for name in types}
    if section is None:
        return never
    if not isinstance(section, list):
        check.fail(
            "never_link", f"is {section!r}", "write a list of pairs like [anonymous_id, phone]"
        )
    for index, pair in enumerate(section):
        key = f"never_link[{index}]"
        if not isinstance(pair, list) or len(pair) != 2:
            check.fail(key, f"is {pair!r}", "write a pair of type names like [anonymous_id, phone]")
        for name in pair:
            if name not in types:
                check.fail(key, f"names {name!r}, not a type", f"use one of {', '.join(types)}")
        first, second = pair
        never[first].add(second)
        never[second].add(first)
    return never


def _blocklist(check: _Checker, section: Any, types: list[str]) -> tuple[BlockRule, ...]:
    if section is None:
        return ()
    if not isinstance(section, list):
        check.fail(
            "blocklist", f"is {section!r}", "write a list of {type, value or pattern, reason}"
        )
    rules: dict[tuple[str, str, str], BlockRule] = {}
    with duckdb.connect() as con:
        for index, entry in enumerate(section):
            key = f"blocklist[{index}]"
            if not isinstance(entry, dict):
                check.fail(key, f"is {entry!r}", "write {type: ..., value: ..., reason: ...}")
            check.known_keys(entry, key, ("type", "value", "pattern", "reason"))
            identifier_type = entry.get("type")
            if identifier_type != "*" and identifier_type not in types:
                check.fail(
                    f"{key}.type",
                    f"is {identifier_type!r}",
                    f'use "*" (every type) or one of {", ".join(types)}',
                )
            if ("value" in entry) == ("pattern" in entry):
                check.fail(key, "needs exactly one of value or pattern", "keep one of the two")
            reason = entry.get("reason")
            if not isinstance(reason, str) or not reason.strip():
                check.fail(f"{key}.reason", "is missing", "say why the value is not an identifier")
            if "value" in entry:
                match_type, pattern = "exact", str(entry["value"]).lower()
            else:
                match_type, pattern = "regex", entry["pattern"]
                if not isinstance(pattern, str):
                    check.fail(f"{key}.pattern", f"is {pattern!r}", "write the regex as a string")
                try:
                    con.execute("select regexp_full_match('', ?)", [pattern])
                except duckdb.Error as error:
                    check.fail(
                        f"{key}.pattern",
                        f"is not a valid regular expression ({error})",
                        "write an RE2 regex in single quotes (no lookarounds)",
                    )
            for name in types if identifier_type == "*" else [identifier_type]:
                if (name, match_type, pattern) in rules and identifier_type != "*":
                    check.fail(key, f"repeats {match_type} {pattern!r}", "remove the duplicate")
                rules.setdefault(
                    (name, match_type, pattern), BlockRule(name, match_type, pattern, reason)
                )
    return tuple(rules.values())
