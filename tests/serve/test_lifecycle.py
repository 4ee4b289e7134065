"""The server's life cycle: draining on SIGTERM (a real ``python -m serve`` process), cheap admission, the
queue's maximum wait, the body timeout, probes, settings that refuse to start, logs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from serve_helpers import changed, free_port, wait_for_health
from test_api import assert_error

from arxiv_embed.onnx import OnnxEncoder
from serve.app import create_app
from serve.batching import Batcher
from serve.lifecycle import WARMUP_TEXT
from serve.settings import Settings

pytest_plugins = ["onnx_fixtures"]

REPO = Path(__file__).resolve().parents[2]
ABSTRACT = (
    "We study the distribution of prime gaps in arithmetic progressions and prove an upper bound on the number "
    "of exceptional moduli, using a large sieve inequality and zero-density estimates for Dirichlet L-functions. "
)


def serve_env(onnx_minilm_dir: Path, port: int, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARXIV_EMBED_")}
    env |= {
        "PORT": str(port),
        "ARXIV_EMBED_MODEL_DIR": str(onnx_minilm_dir),
        "ARXIV_EMBED_INDEX_DIR": "",
        "ARXIV_EMBED_CLASSIFIER_DIR": "",
    }
    return env | {f"ARXIV_EMBED_{k.upper()}": v for k, v in settings.items()}


# --- SIGTERM on a real server process ----------------------------------------------------------------------


def test_sigterm_finishes_or_refuses_accepted_work_in_json_and_exits_0(onnx_minilm_dir: Path) -> None:
    """32 connections keep sending 64 abstracts each (with max_queue=4096 the queue may hold more than the
    grace period can serve on a few cores); SIGTERM: every request sent gets a 200, a JSON 429 or a JSON 503
    (none a plain-text 500), the server logs in JSON (its "ready" line included) and exits 0 within the grace
    period."""
    port = free_port()
    env = serve_env(
        onnx_minilm_dir, port, max_queue="4096", max_queue_wait_s="2", shutdown_grace_s="4", log_format="json"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "serve"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    body = {"input": [f"{i}. {ABSTRACT}" for i in range(64)], "model": "arxiv-embed-minilm"}
    outcomes: list[tuple[float, int | None, str, str]] = []  # sent at, status, content type, error_type
    stop_sending = threading.Event()
    try:
        wait_for_health(url)

        def client() -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                while not stop_sending.is_set():
                    sent = time.monotonic()
                    try:
                        r = http.post("/v1/embeddings", json=body)
                    except httpx.TransportError:  # the listener closed after SIGTERM
                        outcomes.append((sent, None, "", ""))
                        return
                    kind = r.json().get("error_type", "") if r.status_code != 200 else ""
                    outcomes.append((sent, r.status_code, r.headers.get("content-type", ""), kind))
                    if r.status_code == 429:
                        time.sleep(0.1)

        threads = [threading.Thread(target=client) for _ in range(32)]
        for t in threads:
            t.start()
        time.sleep(3)
        sigterm_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        stop_sending.set()
        code = proc.wait(timeout=20)
        stopped_in = time.monotonic() - sigterm_at
        for t in threads:
            t.join(timeout=30)
        _, stderr = proc.communicate(timeout=5)
    finally:
        stop_sending.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, stderr.decode()[-2000:]
    assert stopped_in < 4 + 2  # the grace period, and the lifespan's shutdown
    statuses = {status for _, status, _, _ in outcomes}
    assert statuses <= {200, 429, 503, None}, outcomes
    assert 200 in statuses
    for sent, status, content_type, kind in outcomes:
        if status in (429, 503):
            assert content_type == "application/json"
            assert kind in ("overloaded", "shutting_down", "queue_timeout")
        if status is None:  # no answer only for a request sent after SIGTERM
            assert sent >= sigterm_at - 0.5
    lines = stderr.decode().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    messages = [r["message"] for r in records]
    assert any(m.startswith("ready: ") for m in messages)
    assert any(m.startswith("draining") for m in messages)
    assert not any("Traceback" in m or "Exception in ASGI" in m or "Cancel" in m for m in messages), messages


def test_blank_api_key_stops_the_server_at_start_with_one_line(onnx_minilm_dir: Path) -> None:
    for key in ("", "   "):
        env = serve_env(onnx_minilm_dir, free_port(), api_key=key)
        done = subprocess.run(
            [sys.executable, "-m", "serve"], cwd=REPO, env=env, capture_output=True, timeout=60
        )
        assert done.returncode == 2
        lines = done.stderr.decode().strip().splitlines()
        assert len(lines) == 1, lines
        assert "ARXIV_EMBED_API_KEY is empty or blank" in lines[0]


def test_grace_period_must_cover_the_queue_wait(settings: Settings) -> None:
    with pytest.raises(ValueError, match="shutdown_grace_s"):
        changed(settings, max_queue_wait_s=5, shutdown_grace_s=5.5)
    with pytest.raises(ValueError, match="API_KEY"):
        changed(settings, api_key=" \t")


# --- in process: drain, admission, queue wait ---------------------------------------------------------------


def gated(encoder: OnnxEncoder, gate: threading.Event, calls: list[int] | None = None):
    def encode(texts: list[str]) -> np.ndarray:
        if calls is not None:
            calls.append(len(texts))
        gate.wait(timeout=30)
        return encoder.encode(texts, normalize=False)

    return encode


async def with_gated_batcher(app: FastAPI, encoder: OnnxEncoder, gate: threading.Event, **batcher: object):
    runtime = app.state.runtime
    await runtime.batcher.stop()
    runtime.batcher = Batcher(gated(encoder, gate), max_batch_size=1, max_wait_s=0, max_queue=100, **batcher)
    runtime.batcher.start()
    return runtime.batcher


def run_with_app(app: FastAPI, scenario) -> object:
    async def run() -> object:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
                return await scenario(http)

    return asyncio.run(run())


def test_draining_refuses_new_work_with_503_and_retry_after(settings: Settings, encoder: OnnxEncoder) -> None:
    app = create_app(settings)
    gate = threading.Event()

    async def scenario(http: httpx.AsyncClient) -> None:
        batcher = await with_gated_batcher(app, encoder, gate)
        first = asyncio.create_task(http.post("/embed", json={"input": "in inference"}))
        await asyncio.sleep(0.2)
        second = asyncio.create_task(http.post("/embed", json={"input": "queued"}))
        await asyncio.sleep(0.2)
        app.state.lifecycle.drain()
        late = await http.post("/embed", json={"input": "after SIGTERM"})
        assert_error(late, 503, "shutting_down")
        assert late.headers["retry-after"] == "1"
        assert_error(await http.get("/ready"), 503, "shutting_down")
        assert (await http.get("/health")).status_code == 200  # alive: not restarted while it drains
        assert batcher.refuse_waiting() == 1  # what the grace period's end does with the queue
        assert_error(await second, 503, "shutting_down")
        gate.set()
        assert (await first).status_code == 200  # accepted and in inference: finished

    run_with_app(app, scenario)


def test_queued_work_past_its_maximum_wait_is_refused(settings: Settings, encoder: OnnxEncoder) -> None:
    app = create_app(changed(settings, max_queue_wait_s=0.3, shutdown_grace_s=2))
    gate = threading.Event()

    async def scenario(http: httpx.AsyncClient) -> None:
        await with_gated_batcher(app, encoder, gate, max_queue_s=0.3)
        first = asyncio.create_task(http.post("/embed", json={"input": "in inference"}))
        await asyncio.sleep(0.1)
        start = time.perf_counter()
        second = await http.post("/embed", json={"input": "waits too long"})
        waited = time.perf_counter() - start
        assert_error(second, 503, "queue_timeout")
        assert second.headers["retry-after"] == "1"
        assert 0.25 < waited < 2
        assert app.state.runtime.batcher.queued == 0
        gate.set()
        assert (await first).status_code == 200  # taken before its deadline: served

    run_with_app(app, scenario)


def test_full_queue_is_refused_before_the_body_is_read_or_tokenised(
    settings: Settings, encoder: OnnxEncoder
) -> None:
    """With max_queue texts in progress by estimate, a 429 comes back without the body being read (a receive
    that never returns) and without the tokenizer, in well under 10 ms."""
    app = create_app(changed(settings, max_queue=4))
    gate = threading.Event()

    async def never() -> dict:
        await asyncio.Event().wait()
        return {}

    async def scenario(http: httpx.AsyncClient) -> list[float]:
        await with_gated_batcher(app, encoder, gate)
        runtime = app.state.runtime
        busy_body = {"input": [ABSTRACT * 2] * 6}  # about 2.6 KB: 3 texts by estimate
        assert app.state.lifecycle.estimate("/embed", len(json.dumps(busy_body))) == 3
        busy = asyncio.create_task(http.post("/embed", json=busy_body))
        await asyncio.sleep(0.2)
        counted: list[int] = []
        count_tokens = runtime.encoder.count_tokens
        runtime.encoder.count_tokens = lambda texts: counted.append(len(texts)) or count_tokens(texts)
        timings = []
        for _ in range(20):
            sent: list[dict] = []
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": "/embed",
                "raw_path": b"/embed",
                "query_string": b"",
                "root_path": "",
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2000")],
                "client": ("127.0.0.1", 1),
                "server": ("api", 80),
            }

            async def send(message: dict, sent: list[dict] = sent) -> None:
                sent.append(message)

            start = time.perf_counter()
            await asyncio.wait_for(app(scope, never, send), 5)
            timings.append(time.perf_counter() - start)
            assert sent[0]["status"] == 429
            body = json.loads(sent[1]["body"])
            assert body["error_type"] == "overloaded"
            assert (b"retry-after", b"1") in sent[0]["headers"]
        assert counted == []  # nothing tokenised for the refused requests
        gate.set()
        assert (await busy).status_code == 200
        return timings

    timings = run_with_app(app, scenario)
    assert sorted(timings)[len(timings) // 2] < 0.005, timings  # median


def test_ready_only_after_the_warm_up_call(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    original = OnnxEncoder.encode

    def spy(self: OnnxEncoder, texts: list[str], *args: object, **kwargs: object) -> np.ndarray:
        seen.append(list(texts))
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(OnnxEncoder, "encode", spy)
    app = create_app(settings)

    async def scenario(http: httpx.AsyncClient) -> None:
        assert [WARMUP_TEXT] in seen
        assert (await http.get("/ready")).status_code == 200

    run_with_app(app, scenario)


# --- body timeout on a real socket ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_body_url(settings: Settings) -> Iterator[tuple[str, int]]:
    port = free_port()
    app = create_app(changed(settings, body_timeout_s=0.5))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for_health(f"http://127.0.0.1:{port}")
        yield f"http://127.0.0.1:{port}", port
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def test_a_body_shorter_than_its_content_length_gets_408_and_the_connection_closes(
    slow_body_url: tuple[str, int],
) -> None:
    url, port = slow_body_url
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        start = time.monotonic()
        s.sendall(
            b"POST /embed HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            b'{"input": '
        )
        raw = b""
        while chunk := s.recv(65536):  # the server closes the connection after its answer
            raw += chunk
        elapsed = time.monotonic() - start
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), raw
    assert json.loads(body)["error_type"] == "timeout"
    assert 0.4 < elapsed < 3
    assert httpx.post(f"{url}/embed", json={"input": "still serving"}).status_code == 200
