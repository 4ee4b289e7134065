"""One error shape for every failure: ``{"error": ..., "error_type": ...}``."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

log = logging.getLogger(__name__)

_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    413: "too_large",
    415: "unsupported_media_type",
    429: "overloaded",
    503: "unavailable",
}


class ApiError(Exception):
    """An error the client should see as it is, with its status code."""

    def __init__(
        self, status_code: int, error_type: str, message: str, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = error_type
        self.message = message
        self.retry_after = retry_after if retry_after is not None else 1 if status_code == 429 else None


def error_body(message: str, error_type: str) -> bytes:
    return json.dumps({"error": message, "error_type": error_type}).encode()


async def send_error(
    send: Send, status: int, error_type: str, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer in the error shape from plain ASGI code (middleware), before the app saw the request."""
    body = error_body(message, error_type)
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head + (headers or [])})
    await send({"type": "http.response.body", "body": body})


def error_response(status_code: int, error_type: str, message: str, headers: dict[str, str] | None = None):
    return JSONResponse(
        {"error": message, "error_type": error_type}, status_code=status_code, headers=headers
    )


def _describe(errors: list[Any]) -> str:
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return error_response(exc.status_code, exc.error_type, exc.message, headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message = _describe(list(exc.errors()))
    content_type = request.headers.get("content-type", "")
    if request.method == "POST" and "json" not in content_type:
        message = f"send JSON with Content-Type: application/json (got {content_type!r}); {message}"
    return error_response(422, "invalid_request", message)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:  # FastAPI's "error parsing the body": bytes that are not JSON (or not UTF-8)
        return error_response(422, "invalid_request", f"the body is not valid JSON: {exc.detail}")
    kind = _HTTP_TYPES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, kind, str(exc.detail), getattr(exc, "headers", None))


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
