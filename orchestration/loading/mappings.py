"""Which header of a CRM export fills which column of ``raw.crm_<kind>``.

A mapping names, per kind and raw column, the export headers that fill it (first match
wins). Headers are matched by their snake-cased form, so case, spacing, punctuation and
column order do not matter. Headers no mapping names are kept in the row's ``attributes``.

* Presets: ``orchestration/crm_mappings/<crm>.yml`` (hubspot, salesforce).
* The landing directory may hold ``crm/mapping.yml``: ``preset: <crm>`` pins the preset
  (default: for each file, the preset that maps its record id and most of its headers), and
  ``<kind>: {<raw column>: <header or list of headers>}`` adds headers of your own, tried
  before the preset's.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from orchestration.loading.schema import CRM_COLUMNS, CRM_KINDS

PRESETS_DIR = Path(__file__).resolve().parent.parent / "crm_mappings"
LANDING_MAPPING = Path("crm") / "mapping.yml"


class MappingError(ValueError):
    """A mapping file is invalid; the message names the file, the key and the fix."""


def snake_case(header: str) -> str:
    """Column name for a header: lowercase, runs of non-alphanumerics -> ``_``, trimmed.

    Accents are folded first ("Région" -> "region") so that names stay ASCII.
    """
    folded = unicodedata.normalize("NFKD", header.lower())
    folded = folded.encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^0-9a-z]+", "_", folded).strip("_")


def unique_names(headers: list[str]) -> list[str]:
    """Snake-cased, unique names in header order (repeats get ``_2``, ``_3``...)."""
    names: list[str] = []
    seen: set[str] = set()
    for position, header in enumerate(headers, start=1):
        base = snake_case(header) or f"column_{position}"
        name, suffix = base, 1
        while name in seen:
            suffix += 1
            name = f"{base}_{suffix}"
        seen.add(name)
        names.append(name)
    return names


@dataclass(frozen=True)
class CrmMapping:
    """One preset, possibly extended by the landing directory's crm/mapping.yml."""

    name: str
    # kind -> raw column -> snake-cased headers that fill it, in order of preference
    headers: dict[str, dict[str, tuple[str, ...]]]
    # kind -> the record-id headers as written in the mapping file (for messages)
    id_headers: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class HeaderMatch:
    """How the columns of one export file map to its raw table."""

    mapping: str
    column_at: dict[str, int]  # raw column -> position in the CSV row
    attributes_at: list[tuple[str, int]]  # attribute key -> position in the CSV row


@dataclass(frozen=True)
class CrmMappings:
    """The mappings a load may use, and a fingerprint of the files they came from."""

    candidates: tuple[CrmMapping, ...]
    fingerprint: str
    source: Path | None = None  # the landing directory's mapping file, if any
    error: str | None = None  # why crm/mapping.yml cannot be used (then no CRM file loads)
    presets: tuple[str, ...] = field(default=())

    def match(self, kind: str, header: list[str]) -> HeaderMatch | None:
        """The candidate mapping that maps the record id and most headers of this file."""
        names = unique_names(header)
        best: HeaderMatch | None = None
        for mapping in self.candidates:
            match = _match(mapping, kind, header, names)
            if "record_id" not in match.column_at:
                continue
            if best is None or len(match.column_at) > len(best.column_at):
                best = match
        return best

    def record_id_headers(self, kind: str) -> list[str]:
        """The record-id headers the candidates accept, for error messages."""
        shown: list[str] = []
        for mapping in self.candidates:
            for header in mapping.id_headers[kind]:
                if header not in shown:
                    shown.append(header)
        return shown


def _match(mapping: CrmMapping, kind: str, header: list[str], names: list[str]) -> HeaderMatch:
    position = {}
    for at, header_text in enumerate(header):
        position.setdefault(snake_case(header_text), at)
    column_at: dict[str, int] = {}
    used: set[int] = set()
    for column, candidates in mapping.headers[kind].items():
        for candidate in candidates:
            at = position.get(candidate)
            if at is not None and at not in used:
                column_at[column] = at
                used.add(at)
                break
    attributes_at = [(names[at], at) for at in range(len(header)) if at not in used]
    return HeaderMatch(mapping.name, column_at, attributes_at)


def load_crm_mappings(landing_dir: Path) -> CrmMappings:
    """The presets, extended by ``crm/mapping.yml`` when the landing directory has one.

    An invalid mapping file does not raise: it is returned as ``error`` so that the load
    can report every CRM file as unreadable for that reason and still load the events.
    """
    digest = hashlib.sha256()
    presets: dict[str, CrmMapping] = {}
    for path in sorted(PRESETS_DIR.glob("*.yml")):
        data = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + data + b"\0")
        presets[path.stem] = _parse_mapping(path.stem, yaml.safe_load(data), path, preset=True)
    # HubSpot first: the DESIGN's default export format wins ties.
    order = sorted(presets, key=lambda name: (name != "hubspot", name))

    source = Path(landing_dir) / LANDING_MAPPING
    if not source.is_file():
        return CrmMappings(
            tuple(presets[name] for name in order), digest.hexdigest(), presets=tuple(order)
        )
    try:
        data = source.read_bytes()
        digest.update(b"landing\0" + data)
        document = yaml.safe_load(data)
        pinned, own = _parse_landing_mapping(document, source, order)
    except (OSError, yaml.YAMLError, MappingError) as error:
        message = str(error) if isinstance(error, MappingError) else f"{source}: {error}"
        return CrmMappings((), digest.hexdigest(), source, message, tuple(order))
    names = [pinned] if pinned else order
    candidates = tuple(_extended(presets[name], own, source) for name in names)
    return CrmMappings(candidates, digest.hexdigest(), source, presets=tuple(order))


def _extended(preset: CrmMapping, own: CrmMapping, source: Path) -> CrmMapping:
    if not any(own.headers[kind] for kind in CRM_KINDS):
        return preset
    headers = {
        kind: {
            column: tuple(dict.fromkeys(own.headers[kind].get(column, ()) + aliases))
            for column, aliases in preset.headers[kind].items()
        }
        for kind in CRM_KINDS
    }
    id_headers = {
        kind: tuple(dict.fromkeys(own.id_headers[kind] + preset.id_headers[kind]))
        for kind in CRM_KINDS
    }
    return CrmMapping(f"{preset.name} + {source.parent.name}/{source.name}", headers, id_headers)


def _parse_landing_mapping(
    document: object, source: Path, presets: list[str]
) -> tuple[str | None, CrmMapping]:
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise MappingError(
            f"{source}: expected a mapping of 'preset' and kinds ({', '.join(CRM_KINDS)}), "
            f"found {type(document).__name__}; see the README's landing-directory section"
        )
    document = dict(document)
    pinned = document.pop("preset", None)
    if pinned is not None and pinned not in presets:
        raise MappingError(
            f"{source}: key 'preset' is {pinned!r}; use one of {', '.join(presets)} "
            "or remove the key to pick the preset per file"
        )
    return pinned, _parse_mapping("landing", document, source, preset=False)


def _parse_mapping(name: str, document: object, source: Path, *, preset: bool) -> CrmMapping:
    if not isinstance(document, dict):
        raise MappingError(f"{source}: expected a YAML mapping of kinds to columns")
    headers: dict[str, dict[str, tuple[str, ...]]] = {kind: {} for kind in CRM_KINDS}
    id_headers: dict[str, tuple[str, ...]] = dict.fromkeys(CRM_KINDS, ())
    for key, columns in document.items():
        if preset and key == "description":
            continue
        if key not in CRM_KINDS:
            raise MappingError(
                f"{source}: unknown key {key!r}; the keys are "
                f"{', '.join(('preset', *CRM_KINDS) if not preset else CRM_KINDS)}"
            )
        if not isinstance(columns, dict):
            raise MappingError(
                f"{source}: key {key!r} must map raw columns to export headers "
                f"(e.g. {key}: {{record_id: Customer Number}}), found {type(columns).__name__}"
            )
        allowed = ("record_id", *CRM_COLUMNS[key])
        for column, spelled in columns.items():
            if column not in allowed:
                raise MappingError(
                    f"{source}: {key}.{column} is not a column of raw.crm_{key}; use one of "
                    f"{', '.join(allowed)} (other headers are kept in `attributes` as they are)"
                )
            values = [spelled] if isinstance(spelled, str) else spelled
            if (
                not isinstance(values, list)
                or not values
                or not all(isinstance(v, str) and snake_case(v) for v in values)
            ):
                raise MappingError(
                    f"{source}: {key}.{column} must be an export header or a list of headers "
                    f"(text), found {spelled!r}"
                )
            headers[key][column] = tuple(snake_case(v) for v in values)
            if column == "record_id":
                id_headers[key] = tuple(values)
    if preset:
        for kind in CRM_KINDS:
            if "record_id" not in headers[kind]:
                raise MappingError(f"{source}: {kind}.record_id is missing from the preset")
            for column in CRM_COLUMNS[kind]:
                headers[kind].setdefault(column, ())
    return CrmMapping(name, headers, id_headers)
