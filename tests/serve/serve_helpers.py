"""Helpers of the API tests: settings copies, free loopback ports, waiting for /health."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI

from serve.settings import Settings


def changed(settings: Settings, **changes: object) -> Settings:
    """A validated copy of ``settings`` with some fields changed."""
    return Settings(**(settings.model_dump(exclude={"port"}) | changes))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_health(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url}/health did not answer 200 within {timeout} s")


@contextmanager
def served_in_thread(app: FastAPI) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port in a thread of this process; yields its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)
