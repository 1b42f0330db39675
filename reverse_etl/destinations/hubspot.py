"""HubSpot contacts: the CRM v3 batch upsert API.

``POST {base_url}/crm/v3/objects/contacts/batch/upsert`` with ``Authorization: Bearer
<private app token>`` and at most 100 inputs::

    {"inputs": [{"idProperty": "email", "id": "ana@example.com",
                 "properties": {"email": "ana@example.com", "firstname": "Ana", ...}}]}

The sync's ``fields`` map HubSpot property names to model columns; ``id_property`` (default
``email``) names the unique property that identifies a contact; it must be one of the
fields. Values are sent as HubSpot expects them: strings, ``true``/``false``, numbers
with their digits, dates as ``YYYY-MM-DD``, lists joined with ``;``, NULL as ``""``
(clears the property).

Responses: 200 (all upserted) or 207 (multi-status) list the upserted contacts in
``results`` (matched back by the id property) and failures in ``errors`` (matched by
``context.ids``); a row in neither is reported as failed. A 400 (HubSpot rejects the
whole batch when one input is invalid, e.g. a malformed email) is narrowed down by
splitting the batch until the invalid rows are isolated; they fail with HubSpot's
message, the others are upserted. 429 and 5xx are retried honouring ``Retry-After``; the
default rate limit is 10 requests a second (HubSpot's 100 per 10 seconds).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar

from reverse_etl.destinations.base import (
    NETWORK_SETTINGS,
    Batch,
    Destination,
    DestinationError,
    Operation,
    RowResult,
    Setting,
    SyncContext,
    to_json,
)
from reverse_etl.destinations.http import HttpClient, HttpResponse, check_url, raise_for_status
from reverse_etl.pii import redact

UPSERT_PATH = "/crm/v3/objects/contacts/batch/upsert"
MAX_INPUTS = 100


def property_value(value: Any) -> str:
    """A field value as HubSpot property text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, list):
        return ";".join(property_value(v) for v in value)
    if isinstance(value, dict):
        return to_json(value)
    return str(value)


class HubSpotDestination(Destination):
    modes = ("upsert",)
    default_batch_size = MAX_INPUTS
    max_batch_size = MAX_INPUTS
    settings_spec: ClassVar[Mapping[str, Setting]] = {
        "token_env": Setting(
            "the environment variable holding the private app access token", "env", required=True
        ),
        "id_property": Setting(
            "the unique contact property that identifies a contact (a field)", default="email"
        ),
        "base_url": Setting("the API origin (default https://api.hubapi.com)"),
        **NETWORK_SETTINGS,
        "rate_limit_per_second": Setting(
            "most requests a second (default 10: HubSpot allows 100 per 10 seconds)",
            "number",
            10.0,
            minimum=0.001,
        ),
    }

    @classmethod
    def validate_settings(
        cls, settings: Mapping[str, Any], field_names: Sequence[str], mode: str | None
    ) -> list[str]:
        problems = super().validate_settings(settings, field_names, mode)
        id_property = settings.get("id_property") or "email"
        if field_names and id_property not in field_names:
            problems.append(
                f"'destination.id_property' {id_property!r} is not among the fields "
                f"({', '.join(field_names)}): map it, e.g. '{id_property}: <column>'"
            )
        base_url = settings.get("base_url")
        if base_url not in (None, ""):
            problem = check_url(base_url)
            if problem:
                problems.append(f"'destination.base_url' {problem}")
        return problems

    def __init__(self, settings: Mapping[str, Any], context: SyncContext) -> None:
        super().__init__(settings, context)
        token = self.secret("token_env")
        self.id_property: str = self.settings["id_property"] or "email"
        self.client = HttpClient.from_settings(
            self.settings,
            default_base_url="https://api.hubapi.com",
            what=f"HubSpot sync {context.sync_name!r}:",
            headers={"Authorization": f"Bearer {token.reveal()}"},
        )

    @property
    def output(self) -> str | None:
        return f"{self.client.origin}{UPSERT_PATH}"

    def check_connection(self) -> None:
        return None  # a bad token shows as a 401 on the first batch, with a hint

    def _id(self, fields: Mapping[str, Any]) -> str:
        value = property_value(fields.get(self.id_property)).strip()
        return value.lower() if self.id_property == "email" else value

    def write(self, batch: Batch) -> list[RowResult]:
        failures: list[RowResult] = []
        sendable: list[tuple[Operation, dict[str, Any]]] = []
        seen: set[str] = set()
        for op in batch:
            fields = op.fields
            contact_id = self._id(fields)
            if not contact_id:
                failures.append(
                    RowResult(op.key, False, f"no value for the id property {self.id_property!r}")
                )
            elif contact_id in seen:
                failures.append(
                    RowResult(
                        op.key,
                        False,
                        f"another row of this batch has the same {self.id_property!r}: "
                        "HubSpot would merge them; fix the duplicate in the model",
                    )
                )
            else:
                seen.add(contact_id)
                sendable.append((op, fields))
        return failures + self._upsert(sendable)

    def _upsert(self, rows: list[tuple[Operation, dict[str, Any]]]) -> list[RowResult]:
        """Upsert ``rows``; on a whole-batch 400, split the batch to isolate the bad rows."""
        if not rows:
            return []
        by_id = {self._id(fields): op.key for op, fields in rows}
        body = {
            "inputs": [
                {
                    "idProperty": self.id_property,
                    "id": self._id(fields),
                    "properties": {name: property_value(v) for name, v in fields.items()},
                }
                for _, fields in rows
            ]
        }
        response = self.client.send("POST", UPSERT_PATH, json.dumps(body).encode())
        if response.status == 400 and len(rows) > 1:
            middle = len(rows) // 2
            return self._upsert(rows[:middle]) + self._upsert(rows[middle:])
        if response.status == 400:
            [(op, _)] = rows
            return [RowResult(op.key, False, f"HubSpot refused the contact: {_message(response)}")]
        raise_for_status(response, f"HubSpot sync {self.context.sync_name!r}")
        return self._results(response, by_id)

    def _results(self, response: HttpResponse, by_id: dict[str, str]) -> list[RowResult]:
        try:
            answer = json.loads(response.body)
        except ValueError as error:
            raise DestinationError(
                f"HubSpot sync {self.context.sync_name!r}: HTTP {response.status} with a body "
                f"that is not JSON: {response.excerpt()}"
            ) from error
        confirmed: set[str] = set()
        for result in answer.get("results") or []:
            properties = result.get("properties") or {}
            confirmed.add(self._id(properties))
        failures: dict[str, str] = {}
        for error in answer.get("errors") or []:
            ids = (error.get("context") or {}).get("ids") or []
            for contact_id in ids:
                contact_id = str(contact_id).strip()
                key = by_id.get(contact_id.lower() if self.id_property == "email" else contact_id)
                if key is not None:
                    failures[key] = f"{error.get('category', 'ERROR')}: {error.get('message', '')}"
        results = [RowResult(key, False, reason) for key, reason in failures.items()]
        for contact_id, key in by_id.items():
            if contact_id not in confirmed and key not in failures:
                results.append(
                    RowResult(key, False, "HubSpot did not confirm this contact in its response")
                )
        return results

    def close(self) -> None:
        self.client.close()


def _message(response: HttpResponse) -> str:
    try:
        answer = json.loads(response.body)
        return str(answer.get("message") or answer)[:500]
    except ValueError:
        return redact(response.excerpt())
