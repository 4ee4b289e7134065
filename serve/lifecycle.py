"""The server's life cycle around the app: readiness, cheap admission, draining on SIGTERM, slow bodies.

- Probes: ``/health`` is liveness (the process answers HTTP; also while it drains), ``/ready`` readiness: 200
  only once the model, the index and the classifier are loaded and one warm-up model call ran, 503 again as
  soon as the server drains.
- Admission (:class:`Admission`): before the app reads, parses or tokenises a body, an inference request is
  counted by a cheap estimate of its texts (Content-Length over ``BYTES_PER_TEXT``, at most ``max_items``);
  it is answered 429 at once when the estimates of the requests in progress would pass ``max_queue``, or when
  the workers, at their recent pace, would not reach it within ``max_queue_wait_s`` (it would only wait
  to be refused with 503 ``queue_timeout``).
- Draining: on SIGTERM (:class:`DrainingServer`) every new request gets 503 ``shutting_down`` with
  ``Retry-After``, accepted work goes on; what is still queued ``shutdown_grace_s - 1`` s later is refused with
  the same 503, so uvicorn's grace period (``shutdown_grace_s``) never has to cancel a request, which uvicorn
  answers with a plain-text 500. Queued work waits at most ``max_queue_wait_s`` anyway (the settings check
  that the grace is longer).
- Body timeout (:class:`BodyTimeout`): a body that has not fully arrived ``body_timeout_s`` after the request
  started is answered 408 and the connection closed; uvicorn's own timeouts cover idle connections only.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

import uvicorn
from fastapi import APIRouter
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.batching import Batcher
from serve.errors import ApiError, send_error
from serve.metrics import Metrics
from serve.schemas import ErrorResponse, HealthResponse
from serve.settings import Settings

log = logging.getLogger("serve")

INFERENCE_PATHS = frozenset({"/embed", "/v1/embeddings", "/search", "/classify"})
ONE_TEXT_PATHS = frozenset({"/search", "/classify"})
PROBE_PATHS = frozenset({"/health", "/ready", "/metrics"})  # answered while draining too
BYTES_PER_TEXT = 1024  # an abstract in a JSON body is about 1 KB: the admission's estimate of a body's texts
WARMUP_TEXT = "Warm-up: one model call before the server reports ready."
RETRY_AFTER = b"1"

Phase = Literal["starting", "ready", "draining", "stopped"]


class Lifecycle:
    """What the server knows of its own state, shared by the probes, the admission and the stop signal."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.phase: Phase = "starting"
        self.admitted = 0  # estimated texts of the inference requests in progress
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batcher: Batcher | None = None

    @property
    def draining(self) -> bool:
        return self.phase in ("draining", "stopped")

    def estimate(self, path: str, content_length: int | None) -> int:
        """Texts a request probably holds, from its path and body size (no parsing)."""
        if path in ONE_TEXT_PATHS:
            return 1
        if content_length is None:  # chunked: assume the most
            return self.settings.max_items
        return min(self.settings.max_items, max(1, -(-content_length // BYTES_PER_TEXT)))

    def started(self, batcher: Batcher) -> None:
        """The app is loaded and warm (called from the lifespan, on the event loop)."""
        self._loop = asyncio.get_running_loop()
        self._batcher = batcher
        if self.phase == "starting":
            self.phase = "ready"

    def stopped(self) -> None:
        self.phase = "stopped"
        self._batcher = None

    def refusal(self, texts: int) -> str | None:
        """Why a request of about ``texts`` texts is refused now (429), or None to admit it."""
        admitted, limit = self.admitted, self.settings.max_queue
        if not admitted:
            return None  # nothing in progress: even a large request goes
        if admitted + texts > limit:
            return f"about {admitted} texts are in progress (at most {limit}); retry later"
        wait = self._batcher.expected_wait(admitted) if self._batcher is not None else None
        if wait is not None and wait > self.settings.max_queue_wait_s:
            return (
                f"the {admitted} texts in progress need about {wait:.1f} s, more than the longest wait "
                f"({self.settings.max_queue_wait_s:g} s); retry later"
            )
        return None

    def drain(self) -> None:
        """Stop taking work. Safe to call from a signal handler (it only sets a flag and wakes the loop)."""
        if self.draining:
            return
        self.phase = "draining"
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._schedule_refusal)

    def _schedule_refusal(self) -> None:
        grace = self.settings.shutdown_grace_s
        cutoff = max(grace - 1.0, grace / 2)  # a second left for the model calls in progress
        log.info("draining: new requests get 503; queued work is refused after %.1f s", cutoff)
        assert self._loop is not None
        self._loop.call_later(cutoff, self._refuse)

    def _refuse(self) -> None:
        if self._batcher is not None:
            refused = self._batcher.refuse_waiting()
            if refused:
                log.warning(
                    "draining: refused %d queued text(s) that the grace period would not cover", refused
                )


def probes_router(lifecycle: Lifecycle) -> APIRouter:
    """``/health`` (liveness) and ``/ready`` (readiness)."""
    router = APIRouter(tags=["probes"])

    @router.get("/health")
    async def health() -> HealthResponse:
        """Liveness: 200 while the process serves HTTP, also while it loads or drains."""
        return HealthResponse(status="ok")

    @router.get("/ready", responses={503: {"model": ErrorResponse}})
    async def ready() -> HealthResponse:
        """Readiness: 200 once the model, index and classifier are loaded and warm; 503 before and while
        draining."""
        if lifecycle.phase == "ready":
            return HealthResponse(status="ok")
        if lifecycle.draining:
            raise ApiError(503, "shutting_down", "the server is shutting down", retry_after=1)
        raise ApiError(503, "not_ready", "the model is not loaded yet", retry_after=1)

    return router


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class Admission:
    """Refuses work before it costs anything: 503 while draining, 429 when the queue is full by estimate."""

    def __init__(self, app: ASGIApp, lifecycle: Lifecycle, metrics: Metrics) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lifecycle, path = self.lifecycle, scope["path"]
        if lifecycle.draining and path not in PROBE_PATHS:
            self.metrics.rejected.labels("shutting_down").inc()
            await send_error(
                send,
                503,
                "shutting_down",
                "the server is shutting down; retry on another instance",
                [(b"retry-after", RETRY_AFTER), (b"connection", b"close")],
            )
            return
        if path not in INFERENCE_PATHS or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        texts = lifecycle.estimate(path, _content_length(scope))
        reason = lifecycle.refusal(texts)
        if reason is not None:
            self.metrics.rejected.labels("overloaded").inc()
            await send_error(send, 429, "overloaded", reason, [(b"retry-after", RETRY_AFTER)])
            return
        lifecycle.admitted += texts
        try:
            await self.app(scope, receive, send)
        finally:
            lifecycle.admitted -= texts


class BodyTooSlow(HTTPException):
    """The request body did not arrive in time (408); the connection is closed."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            408, f"the request body did not arrive within {seconds:g} s", headers={"Connection": "close"}
        )


class BodyTimeout:
    """Outermost middleware: ``receive`` fails with :class:`BodyTooSlow` once the body is late."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds
        complete = False
        started = False

        async def timed_receive() -> Message:
            nonlocal complete
            if complete:  # the body is in: waiting for a disconnect may take as long as it takes
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTooSlow(self.seconds) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, tracked_send)
        except BodyTooSlow as e:  # raised outside the app's error handlers (a middleware reading the body)
            if started:
                raise
            await send_error(send, 408, "timeout", e.detail, [(b"connection", b"close")])


class DrainingServer(uvicorn.Server):
    """uvicorn's server that tells the app to drain as soon as a stop signal arrives."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle

    def handle_exit(self, sig: int, frame: object) -> None:
        self.lifecycle.drain()
        super().handle_exit(sig, frame)  # type: ignore[arg-type]
