"""Webhook destination: JSON batches POSTed to a URL, signed with HMAC-SHA256.

The contract a receiver implements (also in the README):

Request: ``POST <url>`` with headers ``Content-Type: application/json``,
``Idempotency-Key: <batch id>`` and ``X-CDP-Signature: sha256=<hex>``, the HMAC-SHA256 of
the raw body keyed with the secret from the environment variable ``secret_env`` names.
Body::

    {"sync": "<sync name>", "batch_id": "<batch id>",
     "operations": [{"id": "<operation id>", "op": "upsert"|"update"|"insert"|"delete",
                     "key": "<primary key>", "fields": {...}}, ...]}

``upsert`` creates or replaces the record with that key; ``update`` changes it only if it
exists (else reject the row); ``insert`` creates it only if it does not exist (an existing
record is left alone and is not an error); ``delete`` removes it (for ``delete``, fields
are the last values sent). A batch or an operation may arrive more than once (a retry
after a timeout or a dropped connection, a re-run after a crash): the same batch carries
the same ``Idempotency-Key`` and the same operation the same ``id``, so the receiver
applies each id once.

Response: any 2xx means every operation was applied except those listed in an optional
JSON body ``{"rejected": [{"key": "<primary key>", "reason": "<why>"}]}``; rejected rows
are recorded in ``reverse_etl.sync_row_errors`` and sent again next run. 408, 425, 429
and 5xx are retried (``Retry-After`` honoured); other statuses stop the run.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring as _quote
from typing import Any, ClassVar
from urllib.parse import urlsplit

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
from reverse_etl.destinations.retry import RetryPolicy

SIGNATURE_HEADER = "X-CDP-Signature"


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-CDP-Signature`` header value of ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookDestination(Destination):
    modes = ("mirror", "upsert", "update", "insert")
    default_batch_size = 1_000
    max_batch_size = 10_000
    settings_spec: ClassVar[Mapping[str, Setting]] = {
        "url": Setting("the http(s) URL that receives the batches", required=True),
        "secret_env": Setting(
            "the environment variable holding the HMAC signing secret", "env", required=True
        ),
        **NETWORK_SETTINGS,
    }

    @classmethod
    def validate_settings(
        cls, settings: Mapping[str, Any], field_names: Sequence[str], mode: str | None
    ) -> list[str]:
        problems = super().validate_settings(settings, field_names, mode)
        url = settings.get("url")
        if url not in (None, ""):
            problem = check_url(url)
            if problem:
                problems.append(f"'destination.url' {problem}")
        return problems

    def __init__(self, settings: Mapping[str, Any], context: SyncContext) -> None:
        super().__init__(settings, context)
        self.secret_key = self.secret("secret_env")
        parts = urlsplit(self.settings["url"])
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.client = HttpClient(
            f"{parts.scheme}://{parts.netloc}",
            what=f"webhook of sync {context.sync_name!r}:",
            timeout=self.settings["timeout_seconds"],
            policy=RetryPolicy.from_settings(self.settings),
            rate_limit_per_second=self.settings["rate_limit_per_second"],
            headers={"User-Agent": "warehouse-cdp-reverse-etl"},
        )
        self._prefix = f'{{"sync":{_quote(context.sync_name)},"batch_id":'

    @property
    def output(self) -> str | None:
        return f"{self.client.origin}{urlsplit(self.settings['url']).path}"  # no query string

    def check_connection(self) -> None:
        return None  # the contract has no health endpoint: the first batch tells

    def body(self, batch: Batch) -> bytes:
        operations = ",".join(
            f'{{"id":"{op.id}","op":"{op.op}","key":{_quote(op.key)},"fields":{op.fields_json}}}'
            for op in batch.operations
        )
        return f'{self._prefix}"{batch.id}","operations":[{operations}]}}'.encode()

    def write(self, batch: Batch) -> list[RowResult]:
        if not batch.operations:
            return []
        body = self.body(batch)
        headers = {
            "Idempotency-Key": batch.id,
            SIGNATURE_HEADER: sign(self.secret_key.reveal().encode(), body),
        }
        response = self.client.send("POST", self.path, body, headers)
        raise_for_status(
            response,
            f"webhook of sync {self.context.sync_name!r}",
            fix="see the receiver's logs" if response.status not in (401, 403, 404, 413) else "",
        )
        return self._rejections(response.body)

    def _rejections(self, body: bytes) -> list[RowResult]:
        if not body.strip():
            return []
        try:
            answer = json.loads(body)
        except ValueError:
            return []  # a 2xx without JSON: everything was applied
        rejected = answer.get("rejected") if isinstance(answer, dict) else None
        if rejected is None:
            return []
        if not isinstance(rejected, list) or not all(
            isinstance(r, dict) and isinstance(r.get("key"), str) for r in rejected
        ):
            raise DestinationError(
                f"webhook of sync {self.context.sync_name!r}: the response's 'rejected' must "
                'be a list of {"key": "...", "reason": "..."} objects: fix the receiver'
            )
        return [
            RowResult(r["key"], False, str(r.get("reason") or "rejected by the receiver"))
            for r in rejected
        ]

    def close(self) -> None:
        self.client.close()
