"""Retries with exponential backoff that honour ``Retry-After``, and per-destination rate limits.

Network destinations wrap each request in ``with_retries``: a ``TransientError`` (HTTP 429
or 5xx, a timeout, a dropped connection, a lost database connection) is retried after
``backoff_seconds * 2 ** (attempt - 1)`` seconds (with jitter, at most
``max_backoff_seconds``), or exactly after the ``Retry-After`` the destination asked for.
A ``Retry-After`` longer than ``max_backoff_seconds`` stops the run instead of sleeping
for it; so does the last failed attempt. Nothing is lost either way: what was not
confirmed is planned again by the next run.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from reverse_etl.destinations.base import DestinationError

log = logging.getLogger(__name__)
T = TypeVar("T")


class TransientError(Exception):
    """A request failed in a way a retry may fix. ``retry_after``: seconds the server asked."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> RetryPolicy:
        return cls(
            max_attempts=settings["max_attempts"],
            backoff_seconds=settings["backoff_seconds"],
            max_backoff_seconds=settings["max_backoff_seconds"],
        )

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None:
            return max(0.0, retry_after)
        ceiling = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))
        return ceiling * random.uniform(0.5, 1.0)


class RateLimiter:
    """At most ``per_second`` acquisitions a second, spaced evenly; thread-safe."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


_LIMITERS: dict[tuple[str, float], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def shared_rate_limiter(endpoint: str, per_second: float | None) -> RateLimiter | None:
    """The process-wide limiter of one destination endpoint (None: no limit)."""
    if per_second is None:
        return None
    with _LIMITERS_LOCK:
        return _LIMITERS.setdefault((endpoint, float(per_second)), RateLimiter(per_second))


def with_retries(
    action: Callable[[], T],
    *,
    policy: RetryPolicy,
    what: str,
    limiter: RateLimiter | None = None,
) -> T:
    """Run ``action``, retrying ``TransientError`` per ``policy``; raise ``DestinationError``."""
    for attempt in range(1, policy.max_attempts + 1):
        if limiter is not None:
            limiter.acquire()
        try:
            return action()
        except TransientError as error:
            if attempt == policy.max_attempts:
                raise DestinationError(
                    f"{what}: {error} (gave up after {attempt} attempt(s): raise "
                    "'destination.max_attempts' if the destination needs more patience; "
                    "the next run sends what was not confirmed)"
                ) from error
            if error.retry_after is not None and error.retry_after > policy.max_backoff_seconds:
                raise DestinationError(
                    f"{what}: {error}: the destination asked to retry after "
                    f"{error.retry_after:g}s, longer than 'destination.max_backoff_seconds' "
                    f"({policy.max_backoff_seconds:g}s), so the run stops here; the next run "
                    "sends what was not confirmed"
                ) from error
            wait = policy.delay(attempt, error.retry_after)
            log.warning(
                "%s: %s; attempt %d of %d, retrying in %.2fs",
                what,
                error,
                attempt,
                policy.max_attempts,
                wait,
            )
            time.sleep(wait)
    raise AssertionError("unreachable: max_attempts is at least 1")
