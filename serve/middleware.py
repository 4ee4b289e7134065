"""ASGI middleware around the whole app: API key, request body size, Prometheus request metrics.

Plain ASGI rather than ``BaseHTTPMiddleware``: it adds no task or stream per request, which matters at
a few hundred requests per second on two cores.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.errors import send_error
from serve.metrics import Metrics

# Probes (liveness and readiness), scrapers, the API description and the search page's files need no key (the page asks for it and
# sends it with its API calls).
OPEN_PATHS = frozenset(
    {"/", "/health", "/ready", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)
OPEN_PREFIX = "/static/"


def _open_label(path: str) -> str | None:
    """The metrics label of a path that needs no key, or None for one that does."""
    if path in OPEN_PATHS:
        return path
    return "/static" if path.startswith(OPEN_PREFIX) else None


async def _send_error(send: Send, status: int, error_type: str, message: str) -> None:
    headers = [(b"www-authenticate", b"Bearer")] if status == 401 else None
    await send_error(send, status, error_type, message, headers)


def _bearer_or_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip()
        if name == b"x-api-key":
            return value.strip()
    return None


class GuardAndMeasure:
    """Checks the API key and body size before the app sees a request, and counts and times every request."""

    def __init__(self, app: ASGIApp, metrics: Metrics, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            passed = await self._guard(scope, receive, send_and_record)
            if passed is not None:
                await self.app(scope, passed, send_and_record)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or _open_label(scope["path"]) or "other"
            self.metrics.requests.labels(label, scope["method"], str(status)).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - start)

    async def _guard(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """The receive channel to pass on, or None after answering the request with an error."""
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if self.api_key is not None and _open_label(scope["path"]) is None:
            given = _bearer_or_key(headers)
            if given is None or not hmac.compare_digest(given, self.api_key):
                self.metrics.rejected.labels("unauthorized").inc()
                await _send_error(send, 401, "unauthorized", "missing or wrong API key")
                return None
        length = next((v for k, v in headers if k == b"content-length"), None)
        if length is not None:
            if not length.isdigit():
                await _send_error(send, 400, "bad_request", "invalid Content-Length")
                return None
            if int(length) > self.max_body_bytes:
                await self._too_large(send)
                return None
            return receive
        if scope["method"] in ("GET", "HEAD"):
            return receive
        # A chunked body: read it up to the limit, then replay it to the app.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return receive  # client went away; let the app see it
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                await self._too_large(send)
                return None
            if not message.get("more_body", False):
                break
        replay: dict[str, Any] = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        sent = False

        async def replay_receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return replay
            return await receive()

        return replay_receive

    async def _too_large(self, send: Send) -> None:
        self.metrics.rejected.labels("body_too_large").inc()
        await _send_error(send, 413, "too_large", f"request body is larger than {self.max_body_bytes} bytes")
