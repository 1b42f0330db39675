"""A small HTTP client for API destinations: one kept-alive connection, timeouts, retries.

``HttpClient.send`` sends one request and returns the response; statuses that a retry may
fix (408, 425, 429, 500, 502, 503, 504), timeouts and dropped connections are retried
per ``RetryPolicy`` (``Retry-After`` honoured), under the endpoint's rate limit. Other
statuses are returned for the destination to interpret.
"""

from __future__ import annotations

import email.utils
import http.client
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from reverse_etl.destinations.base import DestinationError
from reverse_etl.destinations.retry import (
    RetryPolicy,
    TransientError,
    shared_rate_limiter,
    with_retries,
)
from reverse_etl.pii import redact

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_EXCERPT = 300


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def excerpt(self) -> str:
        """The start of the body, with emails and phone numbers masked, for messages."""
        text = self.body[:_EXCERPT].decode("utf-8", "replace").strip()
        return redact(text) + ("..." if len(self.body) > _EXCERPT else "")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: delay-seconds (``"2"``, ``"0.5"``) or HTTP-date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def check_url(url: Any) -> str | None:
    """A problem with an http(s) URL setting, or None."""
    if not isinstance(url, str):
        return f"give a URL as a string, not {url!r}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http(s) URL: write it like https://host/path"
    return None


class HttpClient:
    """Requests to one origin (scheme, host, port) over one kept-alive connection."""

    def __init__(
        self,
        base_url: str,
        *,
        what: str,
        timeout: float,
        policy: RetryPolicy,
        rate_limit_per_second: float | None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port
        self.base_path = parts.path.rstrip("/")
        self.what = what
        self.timeout = timeout
        self.policy = policy
        self.headers = dict(headers or {})
        origin = f"{self.scheme}://{self.host}:{self.port or ''}"
        self.limiter = shared_rate_limiter(origin, rate_limit_per_second)
        self._connection: http.client.HTTPConnection | None = None
        self.requests_sent = 0

    @classmethod
    def from_settings(
        cls,
        settings: Mapping[str, Any],
        *,
        default_base_url: str,
        what: str,
        headers: Mapping[str, str],
    ) -> HttpClient:
        """A client from a destination's common settings (base_url, timeout_seconds,
        retries, rate_limit_per_second)."""
        return cls(
            settings["base_url"] or default_base_url,
            what=what,
            timeout=settings["timeout_seconds"],
            policy=RetryPolicy.from_settings(settings),
            rate_limit_per_second=settings["rate_limit_per_second"],
            headers=headers,
        )

    @property
    def origin(self) -> str:
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}://{self.host}{port}"

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            if self.scheme == "https":
                self._connection = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout
                )
            else:
                self._connection = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.timeout
                )
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        """Send with retries; return the first response whose status is not retryable."""
        target = self.base_path + path
        all_headers = {**self.headers, **(headers or {})}
        if body is not None:
            all_headers.setdefault("Content-Type", "application/json")

        def attempt() -> HttpResponse:
            connection = self._connect()
            try:
                self.requests_sent += 1
                connection.request(method, target, body=body, headers=all_headers)
                raw = connection.getresponse()
                response = HttpResponse(raw.status, dict(raw.getheaders()), raw.read())
            except TimeoutError as error:
                self.close()
                raise TransientError(f"no response within {self.timeout:g}s") from error
            except (ConnectionError, http.client.HTTPException, OSError) as error:
                self.close()  # the connection may be half-used: start a fresh one
                reason = type(error).__name__
                raise TransientError(f"connection failed ({reason}: {error})") from error
            if response.headers.get("Connection", "").lower() == "close":
                self.close()
            if response.status in RETRYABLE_STATUSES:
                retry_after = parse_retry_after(_header(response.headers, "Retry-After"))
                raise TransientError(
                    f"HTTP {response.status} {response.excerpt()}".rstrip(), retry_after
                )
            return response

        return with_retries(
            attempt,
            policy=self.policy,
            what=f"{self.what} {method} {self.origin}{target.split('?')[0]}",  # no query: tokens
            limiter=self.limiter,
        )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def raise_for_status(response: HttpResponse, what: str, *, fix: str = "") -> None:
    """Raise ``DestinationError`` for a non-2xx response (after retries were exhausted)."""
    if 200 <= response.status < 300:
        return
    hints = {
        401: "check the credentials the sync's secret environment variable holds",
        403: "the credentials lack a permission (scope) this destination needs",
        404: "check the URL or the object id in syncs.yml",
        413: "the request is too large: lower 'destination.batch_size'",
    }
    hint = fix or hints.get(response.status, "see the response above")
    raise DestinationError(f"{what}: HTTP {response.status} {response.excerpt()}: {hint}")
