"""Advertising audience: members added and removed through the Meta custom audience API.

Mode ``audience``: rows entering the model are added, rows leaving it are removed, a row
whose email or phone changed has its previous identifiers removed and the new ones added.

Matching rules (Meta custom audiences, the same as Google Customer Match): an email is
trimmed and lowercased; a phone is brought to E.164 (``+`` country code and number: spaces,
dashes, dots and parentheses dropped, ``00`` read as ``+``, a number without country code
gets ``default_country_code`` after dropping its trunk ``0``); each is then hashed with
SHA-256 (hex). Meta hashes the E.164 digits without the ``+``. A value that is not a
usable email or phone is left out; a row with neither fails with that reason.

Contract: ``POST {base_url}/{audience_id}/users`` (add) and ``DELETE`` on the same path
(remove), ``Authorization: Bearer <token>``, at most 10,000 rows a request::

    {"payload": {"schema": ["EMAIL", "PHONE"], "data": [["<sha256>", "<sha256 or ''>"], ...]}}

The answer ``{"audience_id", "session_id", "num_received", "num_invalid_entries",
"invalid_entry_samples": {"<hash>": "<reason>"}}`` names rejected rows by one of their
hashes; rows it does not account for (received fewer, or invalid entries it does not
name) fail and are sent again next run (adding and removing are idempotent).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from reverse_etl.destinations.base import (
    NETWORK_SETTINGS,
    Batch,
    Destination,
    DestinationError,
    RowResult,
    Setting,
    SyncContext,
)
from reverse_etl.destinations.http import HttpClient, check_url, raise_for_status

SCHEMA = ["EMAIL", "PHONE"]
MATCH_FIELDS = ("email", "phone")
MAX_ROWS = 10_000
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_COUNTRY_CODE = re.compile(r"^[1-9]\d{0,2}$")


def normalize_email(value: Any) -> str | None:
    """Trimmed and lowercased, or None when it is not an email address."""
    if not isinstance(value, str):
        return None
    email = value.strip().lower()
    return email if _EMAIL.match(email) else None


def normalize_phone(value: Any, default_country_code: str | None = None) -> str | None:
    """E.164 (``+14155550123``), or None when no valid number can be made of it."""
    if value is None:
        return None
    text = str(value).strip()
    digits = re.sub(r"\D", "", text)
    if text.startswith("+"):
        pass
    elif digits.startswith("00"):
        digits = digits[2:]
    elif default_country_code:
        digits = default_country_code + digits.lstrip("0")
    else:
        return None
    if not 8 <= len(digits) <= 15 or digits.startswith("0"):
        return None
    return "+" + digits


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class AudienceDestination(Destination):
    modes = ("audience",)
    default_batch_size = 5_000
    max_batch_size = MAX_ROWS
    settings_spec: ClassVar[Mapping[str, Setting]] = {
        "audience_id": Setting("the custom audience id", required=True),
        "access_token_env": Setting(
            "the environment variable holding the access token", "env", required=True
        ),
        "base_url": Setting("the Graph API root (default https://graph.facebook.com/v21.0)"),
        "default_country_code": Setting(
            "the country calling code for phones written without one, e.g. '1' or '44'"
        ),
        **NETWORK_SETTINGS,
    }

    @classmethod
    def validate_settings(
        cls, settings: Mapping[str, Any], field_names: Sequence[str], mode: str | None
    ) -> list[str]:
        problems = super().validate_settings(settings, field_names, mode)
        if field_names and not set(MATCH_FIELDS) & set(field_names):
            problems.append(
                "an audience matches people by 'email' and/or 'phone': map at least one of "
                "these fields, e.g. 'email: email'"
            )
        code = settings.get("default_country_code")
        if code not in (None, "") and not (isinstance(code, str) and _COUNTRY_CODE.match(code)):
            problems.append(
                f"'destination.default_country_code' is {code!r}: give the calling code as a "
                "quoted string of 1 to 3 digits, e.g. '1' or '44'"
            )
        base_url = settings.get("base_url")
        if base_url not in (None, ""):
            problem = check_url(base_url)
            if problem:
                problems.append(f"'destination.base_url' {problem}")
        if isinstance(settings.get("audience_id"), int):
            problems.append(
                "'destination.audience_id' must be quoted as a string (large ids lose digits)"
            )
        return problems

    def __init__(self, settings: Mapping[str, Any], context: SyncContext) -> None:
        super().__init__(settings, context)
        token = self.secret("access_token_env")
        self.country_code: str | None = self.settings["default_country_code"]
        self.path = f"/{self.settings['audience_id']}/users"
        self.client = HttpClient.from_settings(
            self.settings,
            default_base_url="https://graph.facebook.com/v21.0",
            what=f"audience sync {context.sync_name!r}:",
            headers={"Authorization": f"Bearer {token.reveal()}"},
        )

    @property
    def output(self) -> str | None:
        return f"{self.client.origin}{self.client.base_path}{self.path}"

    def check_connection(self) -> None:
        return None  # a bad token or audience id shows on the first request, with a hint

    def member(self, fields: Mapping[str, Any] | None) -> tuple[str, str] | None:
        """The hashed (email, phone) of a row, '' for a missing one; None if it has neither."""
        if not fields:
            return None
        email = normalize_email(fields.get("email"))
        phone = normalize_phone(fields.get("phone"), self.country_code)
        if email is None and phone is None:
            return None
        return (sha256(email) if email else "", sha256(phone.lstrip("+")) if phone else "")

    def write(self, batch: Batch) -> list[RowResult]:
        failures: dict[str, str] = {}
        removals: list[tuple[str, tuple[str, str]]] = []
        additions: list[tuple[str, tuple[str, str]]] = []
        for op in batch:
            if op.op == "remove":
                member = self.member(op.fields)
                if member is not None:
                    removals.append((op.key, member))
                continue
            member = self.member(op.fields)
            previous = self.member(op.previous)
            if previous is not None and previous != member:
                removals.append((op.key, previous))
            if member is None:
                failures[op.key] = "no email or phone that can be matched (after normalization)"
            elif member != previous:
                additions.append((op.key, member))
        for method, members in (("DELETE", removals), ("POST", additions)):
            for start in range(0, len(members), MAX_ROWS):
                chunk = members[start : start + MAX_ROWS]
                for key, reason in self._send(method, chunk).items():
                    failures.setdefault(key, reason)
        return [RowResult(key, False, reason) for key, reason in failures.items()]

    def _send(self, method: str, members: list[tuple[str, tuple[str, str]]]) -> dict[str, str]:
        """Send one request; return the keys of rows it did not apply, with the reason."""
        if not members:
            return {}
        body = {"payload": {"schema": SCHEMA, "data": [list(m) for _, m in members]}}
        response = self.client.send(method, self.path, json.dumps(body).encode())
        raise_for_status(response, f"audience sync {self.context.sync_name!r} ({method})")
        try:
            answer = json.loads(response.body)
            received = int(answer.get("num_received", len(members)))
            invalid = int(answer.get("num_invalid_entries", 0))
            samples = answer.get("invalid_entry_samples") or {}
        except (ValueError, TypeError, AttributeError) as error:
            raise DestinationError(
                f"audience sync {self.context.sync_name!r}: unexpected answer to {method}: "
                f"{response.excerpt()}"
            ) from error
        failed: dict[str, str] = {}
        for key, member in members:
            for value in member:
                if value and value in samples:
                    failed[key] = f"rejected by the audience API: {samples[value]}"
        unexplained = invalid - len(failed)
        if received != len(members) or unexplained > 0:
            reason = (
                f"the audience API received {received} of {len(members)} rows and reported "
                f"{invalid} invalid without naming them all; sent again next run"
            )
            for key, _ in members:
                failed.setdefault(key, reason)
        return failed

    def close(self) -> None:
        self.client.close()
