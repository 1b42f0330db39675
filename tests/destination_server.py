"""A real HTTP server on 127.0.0.1 that speaks the contracts of the webhook, HubSpot batch
upsert and Meta custom audience destinations, with faults to inject.

Contracts (as the destinations' docstrings and the README describe them):

- ``POST /webhook/...``: verifies ``X-CDP-Signature`` (HMAC-SHA256 of the body), answers a
  repeated ``Idempotency-Key`` with the stored answer, applies each operation id once
  (``upsert``/``insert``/``update``/``delete`` on records keyed by ``key``) and lists
  rejected rows in ``{"rejected": [...]}``.
- ``POST /crm/v3/objects/contacts/batch/upsert``: Bearer token, at most 100 inputs, 400 for
  the whole batch when an email is invalid (as HubSpot does), 207 with ``errors[].context
  .ids`` for property values it rejects, an optional requests-per-second limit (429).
- ``POST|DELETE .../<audience_id>/users``: Bearer token, ``payload.schema`` EMAIL/PHONE
  with SHA-256 hex values; members are kept as a set of rows; invalid entries are counted
  and named in ``invalid_entry_samples``.

Faults (``inject(route, Fault(...))``, consumed one per request, in order): a status
(429/5xx, with ``Retry-After``) without applying; ``slow`` (applies after a delay longer
than the client's timeout); ``drop`` (applies, then closes the connection without an
answer); ``drop_before`` (closes without applying). ``pause_after(route, n)`` blocks the
answer to the n-th applied request until ``resume()`` (to kill a client mid-run).

Run alone (for the benchmark): ``python -m tests.destination_server --port 0`` prints
``listening on http://127.0.0.1:<port>`` and serves until killed.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.server
import itertools
import re
import socket
import sys
import threading
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

WEBHOOK_SECRET = "test-webhook-secret"
HUBSPOT_TOKEN = "pat-test-hubspot-token"
AUDIENCE_TOKEN = "test-meta-access-token"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_AUDIENCE_PATH = re.compile(r"^.*/([0-9]+)/users$")


@dataclass(frozen=True)
class Fault:
    kind: str  # "status" | "slow" | "drop" | "drop_before"
    status: int = 503
    retry_after: str | None = None
    seconds: float = 0.0


@dataclass
class Request:
    route: str
    method: str
    rows: int
    status: int  # 0: the connection was dropped
    at: float
    idempotency_key: str | None = None


@dataclass
class _Pause:
    route: str
    after: int
    paused: threading.Event = field(default_factory=threading.Event)
    resume: threading.Event = field(default_factory=threading.Event)


class DestinationServer:
    """The server and everything it holds; use as a context manager."""

    def __init__(self, *, hubspot_requests_per_second: float | None = None) -> None:
        self.lock = threading.RLock()  # one request applies at a time
        self._local = threading.local()  # rows of the request this thread serves
        # webhook
        self.records: dict[str, dict[str, dict]] = defaultdict(dict)  # path -> key -> fields
        self.applied_operations: Counter[str] = Counter()  # operation id -> times applied
        self.received_operations: Counter[str] = Counter()  # operation id -> times received
        self.answers: dict[str, tuple[int, bytes]] = {}  # Idempotency-Key -> answer
        self.webhook_rejects: dict[str, str] = {}  # key -> reason (not applied)
        # hubspot
        self.contacts: dict[str, dict] = {}  # email -> {"id", "properties"}
        self.contact_creations: Counter[str] = Counter()
        self.hubspot_invalid_values: dict[str, set[str]] = {}  # property -> refused values
        self.hubspot_requests_per_second = hubspot_requests_per_second
        self._hubspot_window: deque[float] = deque()
        self._ids = itertools.count(1001)
        # audiences
        self.audiences: dict[str, set[tuple[str, ...]]] = defaultdict(set)
        self.audience_rejects: dict[str, str] = {}  # hash -> reason
        # faults and observations
        self.faults: dict[str, deque[Fault]] = defaultdict(deque)
        self.requests: list[Request] = []
        self._applied_requests: Counter[str] = Counter()
        self._pause: _Pause | None = None
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> DestinationServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._pause is not None:
            self._pause.resume.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> DestinationServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ test controls

    def inject(self, route: str, *faults: Fault) -> None:
        with self.lock:
            self.faults[route].extend(faults)

    def pause_after(self, route: str, applied_requests: int) -> threading.Event:
        """Block the answer to the n-th applied request of ``route``; returns the event set
        when it is blocked."""
        self._pause = _Pause(route, applied_requests)
        return self._pause.paused

    def resume(self) -> None:
        if self._pause is not None:
            self._pause.resume.set()

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` requests were answered (a slow answer comes in late)."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    def requests_to(self, route: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.route == route]

    # ------------------------------------------------------------------ contracts

    def handle(self, route: str, method: str, path: str, headers, body: bytes):
        """Return (status, headers, body) or None to drop the connection."""
        self._local.rows = 0
        with self.lock:
            fault = self.faults[route].popleft() if self.faults[route] else None
        if fault is not None and fault.kind == "status":
            extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            message = {"status": "error", "message": f"injected {fault.status}"}
            if fault.status == 429:
                message.update(errorType="RATE_LIMIT", policyName="SECONDLY")
            return fault.status, extra, orjson.dumps(message)
        if fault is not None and fault.kind == "drop_before":
            return None
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.seconds)
        with self.lock:
            answer = getattr(self, f"_{route}")(method, path, headers, body)
            self._applied_requests[route] += 1
            applied = self._applied_requests[route]
        pause = self._pause
        if pause is not None and pause.route == route and applied == pause.after:
            pause.paused.set()
            pause.resume.wait(timeout=120)
        if fault is not None and fault.kind == "drop":
            return None
        return answer

    def _webhook(self, method, path, headers, body):
        signature = headers.get("X-CDP-Signature", "")
        expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        if method != "POST" or not hmac.compare_digest(signature, expected):
            return 401, {}, b'{"error": "bad signature"}'
        key = headers.get("Idempotency-Key")
        if not key:
            return 400, {}, b'{"error": "Idempotency-Key header missing"}'
        if key in self.answers:
            return self.answers[key][0], {}, self.answers[key][1]
        batch = orjson.loads(body)
        self._local.rows = len(batch["operations"])
        records = self.records[path]
        rejected = []
        for op in batch["operations"]:
            self.received_operations[op["id"]] += 1
            if op["id"] in self.applied_operations:
                continue  # applied before: at most once per operation id
            if op["key"] in self.webhook_rejects:
                rejected.append({"key": op["key"], "reason": self.webhook_rejects[op["key"]]})
                continue
            kind, record_key = op["op"], op["key"]
            if kind == "update" and record_key not in records:
                rejected.append({"key": record_key, "reason": "no record with this key"})
                continue
            if kind in ("upsert", "update") or (kind == "insert" and record_key not in records):
                records[record_key] = op["fields"]
            elif kind == "delete":
                records.pop(record_key, None)
            self.applied_operations[op["id"]] += 1
        answer = orjson.dumps({"rejected": rejected})
        self.answers[key] = (200, answer)
        return 200, {}, answer

    def _hubspot(self, method, path, headers, body):
        if headers.get("Authorization") != f"Bearer {HUBSPOT_TOKEN}":
            return 401, {}, orjson.dumps({"status": "error", "category": "INVALID_AUTHENTICATION"})
        if self.hubspot_requests_per_second:
            now = time.monotonic()
            while self._hubspot_window and now - self._hubspot_window[0] > 1.0:
                self._hubspot_window.popleft()
            if len(self._hubspot_window) >= self.hubspot_requests_per_second:
                return 429, {}, orjson.dumps({"status": "error", "errorType": "RATE_LIMIT"})
            self._hubspot_window.append(now)
        inputs = orjson.loads(body)["inputs"]
        self._local.rows = len(inputs)
        if len(inputs) > 100:
            return 400, {}, orjson.dumps({"status": "error", "category": "VALIDATION_ERROR"})
        for item in inputs:
            if item.get("idProperty") != "email" or not _EMAIL.match(item.get("id", "")):
                message = (
                    f"Property values were not valid: Email address {item.get('id')} is invalid"
                )
                return (
                    400,
                    {},
                    orjson.dumps(
                        {"status": "error", "category": "VALIDATION_ERROR", "message": message}
                    ),
                )
        results, errors = [], []
        stamp = datetime.now(UTC).isoformat()
        for item in inputs:
            refused = [
                name
                for name, value in item["properties"].items()
                if value in self.hubspot_invalid_values.get(name, ())
            ]
            if refused:
                errors.append(
                    {
                        "status": "error",
                        "category": "VALIDATION_ERROR",
                        "message": f"Property {refused[0]!r} has an invalid option",
                        "context": {"ids": [item["id"]]},
                    }
                )
                continue
            email = item["id"].lower()
            new = email not in self.contacts
            if new:
                self.contacts[email] = {"id": str(next(self._ids)), "properties": {}}
                self.contact_creations[email] += 1
            contact = self.contacts[email]
            contact["properties"].update(item["properties"])
            contact["properties"]["email"] = email
            results.append(
                {
                    "id": contact["id"],
                    "properties": dict(contact["properties"]),
                    "new": new,
                    "createdAt": stamp,
                    "updatedAt": stamp,
                    "archived": False,
                }
            )
        answer = {"status": "COMPLETE", "results": results, "startedAt": stamp}
        if errors:
            answer.update(numErrors=len(errors), errors=errors)
        return (207 if errors else 200), {}, orjson.dumps(answer)

    def _audience(self, method, path, headers, body):
        if headers.get("Authorization") != f"Bearer {AUDIENCE_TOKEN}":
            error = {
                "message": "Invalid OAuth access token.",
                "type": "OAuthException",
                "code": 190,
            }
            return 401, {}, orjson.dumps({"error": error})
        audience_id = _AUDIENCE_PATH.match(path).group(1)
        payload = orjson.loads(body)["payload"]
        self._local.rows = len(payload["data"])
        if payload["schema"] != ["EMAIL", "PHONE"] or len(payload["data"]) > 10_000:
            return 400, {}, orjson.dumps({"error": {"message": "Invalid parameter", "code": 100}})
        members = self.audiences[audience_id]
        invalid: dict[str, str] = {}
        invalid_count = 0
        for row in payload["data"]:
            bad = [v for v in row if v and (not _SHA256.match(v) or v in self.audience_rejects)]
            if bad or not any(row):
                invalid_count += 1
                sample = bad[0] if bad else ""
                invalid[sample] = self.audience_rejects.get(sample, "not a SHA-256 hash")
                continue
            if method == "POST":
                members.add(tuple(row))
            else:
                members.discard(tuple(row))
        answer = {
            "audience_id": audience_id,
            "session_id": str(next(self._ids)),
            "num_received": len(payload["data"]),
            "num_invalid_entries": invalid_count,
            "invalid_entry_samples": invalid,
        }
        return 200, {}, orjson.dumps(answer)


def _route(path: str) -> str:
    if path.startswith("/webhook"):
        return "webhook"
    if path.endswith("/contacts/batch/upsert"):
        return "hubspot"
    if _AUDIENCE_PATH.match(path):
        return "audience"
    return "unknown"


def _handler(server: DestinationServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as APIs do
        disable_nagle_algorithm = True  # answers go out at once (no delayed-ACK stalls)

        def log_message(self, *args) -> None:  # quiet
            return None

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            path = self.path.split("?", 1)[0]
            route = _route(path)
            server._local.rows = 0
            if route == "unknown":
                answer = (404, {}, b'{"error": "no such route"}')
            else:
                answer = server.handle(route, self.command, path, self.headers, body)
            with server.lock:
                server.requests.append(
                    Request(
                        route,
                        self.command,
                        server._local.rows,
                        answer[0] if answer else 0,
                        time.monotonic(),
                        self.headers.get("Idempotency-Key"),
                    )
                )
            if answer is None:  # drop the connection without a word
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            status, headers, payload = answer
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            try:
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client is gone (killed in a test)

        do_POST = _serve
        do_DELETE = _serve

        def do_GET(self) -> None:
            """``GET /_stats``: what the server holds (for the benchmark, in another process)."""
            with server.lock:
                stats = {
                    "records": {path: len(rows) for path, rows in server.records.items()},
                    "applied_operations": len(server.applied_operations),
                    "max_applications": max(server.applied_operations.values(), default=0),
                    "requests": len(server.requests),
                }
            payload = orjson.dumps(stats)
            self.send_response(200 if self.path == "/_stats" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = DestinationServer()
    if args.port:
        server._server.server_close()
        server._server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), _handler(server))
    print(f"listening on {server.url}", flush=True)
    try:
        server._server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
