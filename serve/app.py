"""The embedding API: ``create_app(settings)`` builds it; model, index and classifier load in ``lifespan``.

Run it with ``python -m serve`` (what the container runs) or ``uvicorn serve.app:app``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from arxiv_embed import __version__
from arxiv_embed.onnx import OnnxEncoder
from arxiv_embed.pooling import l2_normalize
from serve.batching import Batcher, Refused
from serve.errors import ApiError, install_error_handlers
from serve.lifecycle import WARMUP_TEXT, Admission, BodyTimeout, Lifecycle, probes_router
from serve.metrics import Metrics
from serve.middleware import GuardAndMeasure
from serve.openai_compat import openai_router, publish_names
from serve.page import install_page
from serve.resources import (
    Classifier,
    PaperIndex,
    absent_reason,
    index_absent,
    load_classifier,
    load_index,
)
from serve.schemas import (
    ClassifyRequest,
    ClassifyResponse,
    EmbedRequest,
    EmbedResponse,
    InfoResponse,
    error_responses,
    publish_limits,
)
from serve.search import search_router
from serve.settings import Settings, get_settings

log = logging.getLogger("serve")

_INLINE_CHARS = 20_000  # requests up to this many characters are tokenized on the event loop
_SURROGATE = re.compile("[\ud800-\udfff]")

CLASSIFIER_FILES = ("coef.npy", "intercept.npy", "classes.json")


@dataclass
class Runtime:
    """Everything loaded at start, kept on ``app.state.runtime`` (None until ready)."""

    settings: Settings
    encoder: OnnxEncoder
    batcher: Batcher
    metrics: Metrics
    index: PaperIndex | None
    index_absent: str | None
    classifier: Classifier | None
    classifier_absent: str | None
    solo_encoder: OnnxEncoder | None  # same model, more threads: for a call that has the machine to itself


_COMMON = (401, 413, 422, 429, 503)


def _vectors_json(content: dict[str, Any]) -> Response:
    """A 200 JSON response whose numpy vectors orjson writes straight from their buffers, each float32 in
    its shortest round-trip form: about half the bytes of Python floats, and no object per value.

    The endpoint's ``response_model`` documents the shape; tests validate real responses against it.
    """
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


async def _runtime(request: Request) -> Runtime:  # async: FastAPI would run a def in a thread
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise ApiError(503, "not_ready", "the model is not loaded yet")
    return runtime


async def _embed(rt: Runtime, texts: list[str], truncate: bool = True) -> tuple[np.ndarray, list[int]]:
    """Raw (un-normalised) embeddings and token counts of ``texts``, through the dynamic batcher."""
    limits = rt.settings
    if len(texts) > limits.max_items:
        rt.metrics.rejected.labels("too_many_inputs").inc()
        raise ApiError(413, "too_many_inputs", f"{len(texts)} texts; at most {limits.max_items} per request")
    # JSON may escape lone surrogates ("\ud800"), which no tokenizer takes: they read as U+FFFD.
    texts = [_SURROGATE.sub("\ufffd", t) if not t.isascii() else t for t in texts]
    for i, text in enumerate(texts):
        if len(text) > limits.max_chars:
            rt.metrics.rejected.labels("text_too_long").inc()
            raise ApiError(
                413, "text_too_long", f"text {i} has {len(text)} characters; at most {limits.max_chars}"
            )
    if sum(len(text) for text in texts) < _INLINE_CHARS:
        tokens = rt.encoder.count_tokens(texts)
    else:  # tokenizing a long request would hold up the event loop
        tokens = await asyncio.to_thread(rt.encoder.count_tokens, texts)
    max_tokens = rt.encoder.max_seq_length
    if not truncate:
        for i, count in enumerate(tokens):
            if count > max_tokens:
                rt.metrics.rejected.labels("too_many_tokens").inc()
                raise ApiError(
                    413,
                    "too_many_tokens",
                    f"text {i} has {count} tokens; the model reads at most {max_tokens} "
                    "(send truncate=true to cut it)",
                )
    rt.metrics.inputs.observe(len(texts))
    try:
        return await rt.batcher.submit(texts, [min(t, max_tokens) for t in tokens]), tokens
    except Refused as e:  # queue full, waited too long, shutting down
        rt.metrics.rejected.labels(e.error_type).inc()
        raise ApiError(e.status_code, e.error_type, str(e), retry_after=1) from e


def _encode_fn(encoder: OnnxEncoder) -> Callable[[list[str]], np.ndarray]:
    def encode(texts: list[str]) -> np.ndarray:  # one model call: the batcher sized the batch
        return encoder.encode(texts, batch_size=len(texts), normalize=False, truncate=True)

    return encode


def usable_cpus() -> list[int] | None:
    """The CPUs this process may run on (its affinity mask, which containers narrow); None off Linux."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def usable_cores() -> int:
    """How many CPUs this process may run on, at least 1."""
    cpus = usable_cpus()
    return max(1, len(cpus)) if cpus is not None else os.cpu_count() or 1


def worker_cpus(settings: Settings, workers: int) -> list[int] | None:
    """The cores to pin the inference workers to, one each, or None (not asked, not Linux, too few cores)."""
    cpus = usable_cpus() if settings.pin_workers else None
    return cpus[:workers] if cpus is not None and workers <= len(cpus) else None


def _solo_threads(settings: Settings) -> int:
    return settings.solo_threads if settings.solo_threads is not None else usable_cores()


def _load(settings: Settings, metrics: Metrics) -> tuple[OnnxEncoder, dict[str, object]]:
    encoder = OnnxEncoder(settings.model_dir, settings.onnx_file, threads=settings.threads)
    loaded: dict[str, object] = {"solo_encoder": None}
    solo_threads = _solo_threads(settings)
    if solo_threads > (settings.threads or usable_cores()):
        # Its threads sleep between calls, so they leave the cores to the other workers' calls.
        loaded["solo_encoder"] = OnnxEncoder(
            settings.model_dir, settings.onnx_file, threads=solo_threads, spin=False
        )
    loaded["index_absent"] = index_absent(settings.index_dir)
    loaded["index"] = None
    if loaded["index_absent"] is None and settings.index_dir is not None:
        loaded["index"] = load_index(settings.index_dir, encoder.dimensions)
    loaded["classifier_absent"] = absent_reason(settings.classifier_dir, CLASSIFIER_FILES)
    loaded["classifier"] = None
    if loaded["classifier_absent"] is None and settings.classifier_dir is not None:
        loaded["classifier"] = load_classifier(settings.classifier_dir, encoder.dimension)
    return encoder, loaded


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API with its own settings, metrics registry and batcher."""
    settings = settings or get_settings()
    metrics = Metrics()
    lifecycle = Lifecycle(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        encoder, loaded = await asyncio.to_thread(_load, settings, metrics)
        # What was loaded lives as long as the process: out of the garbage collector's sight, so a full
        # collection does not walk the index's metadata strings in the middle of a request.
        gc.collect()
        gc.freeze()
        solo = loaded["solo_encoder"]
        workers = settings.inference_workers or usable_cores()
        cpus = worker_cpus(settings, workers)
        batcher = Batcher(
            _encode_fn(encoder),
            settings.max_batch_size,
            settings.max_wait_ms / 1000,
            settings.max_queue,
            workers=workers,
            max_batch_tokens=settings.max_batch_tokens,
            on_batch=metrics.batch_size.observe,
            solo_encode=_encode_fn(solo) if isinstance(solo, OnnxEncoder) else None,
            solo_min_tokens=settings.solo_min_tokens,
            max_padding=settings.max_padding,
            cpus=cpus,
            max_queue_s=settings.max_queue_wait_s,
        )
        metrics.queued.set_function(lambda: batcher.queued)
        batcher.start()
        if settings.warmup:  # the first call of a session allocates its buffers: not on a client's time
            for warm in (encoder, solo):
                if isinstance(warm, OnnxEncoder):
                    await asyncio.to_thread(warm.encode, [WARMUP_TEXT])
        app.state.runtime = Runtime(settings, encoder, batcher, metrics, **loaded)  # type: ignore[arg-type]
        lifecycle.started(batcher)
        log.info(
            "ready: %s/%s (dim %d, %d worker(s) x %s thread(s), pinned: %s, solo calls: %s), index: %s, "
            "classifier: %s",
            settings.model_dir,
            settings.onnx_file,
            encoder.dimension,
            workers,
            settings.threads or "all",
            cpus or "no",
            f"{_solo_threads(settings)} threads" if isinstance(solo, OnnxEncoder) else "off",
            loaded["index_absent"] or "loaded",
            loaded["classifier_absent"] or "loaded",
        )
        try:
            yield
        finally:
            lifecycle.stopped()
            app.state.runtime = None
            await batcher.stop()
            gc.unfreeze()

    app = FastAPI(
        title="arXiv embedding API",
        version=__version__,
        summary="Embeddings of arXiv papers (fine-tuned MiniLM on ONNX Runtime), paper search, subjects.",
        lifespan=lifespan,
        docs_url=None,  # install_page serves /docs and /redoc from local files, not a CDN
        redoc_url=None,
    )
    app.state.runtime = None
    install_page(app)
    app.state.lifecycle = lifecycle
    install_error_handlers(app)
    key = settings.api_key.get_secret_value() if settings.api_key else None
    # Outermost last: body timeout, then key, body size and metrics, then admission (serve/lifecycle.py).
    app.add_middleware(Admission, lifecycle=lifecycle, metrics=metrics)
    app.add_middleware(GuardAndMeasure, metrics=metrics, api_key=key, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(BodyTimeout, seconds=settings.body_timeout_s)
    runtime = Depends(_runtime)
    app.include_router(probes_router(lifecycle))

    @app.get("/info", responses=error_responses(401, 503))
    async def info(rt: Runtime = runtime) -> InfoResponse:
        """The loaded model and what else is available."""
        return InfoResponse(
            model=rt.settings.model_name,
            onnx_file=rt.settings.onnx_file,
            dimension=rt.encoder.dimension,
            dimensions=rt.encoder.dimensions,
            index_dimension=rt.index.index.d if rt.index else None,
            max_tokens=rt.encoder.max_seq_length,
            index_size=rt.index.size if rt.index else None,
            classifier_classes=len(rt.classifier.classes) if rt.classifier else None,
            max_items=rt.settings.max_items,
            max_chars=rt.settings.max_chars,
            version=__version__,
        )

    @app.post("/embed", response_model=EmbedResponse, responses=error_responses(*_COMMON))
    async def embed(body: EmbedRequest, rt: Runtime = runtime) -> Response:
        """Embed one text or a list of texts."""
        texts = [body.input] if isinstance(body.input, str) else body.input
        vectors, tokens = await _embed(rt, texts, body.truncate)
        if body.normalize:
            vectors = l2_normalize(vectors)
        return _vectors_json(
            {
                "model": rt.settings.model_name,
                "dimension": rt.encoder.dimension,
                "embeddings": np.ascontiguousarray(vectors, dtype=np.float32),
                "tokens": tokens,
            }
        )

    app.include_router(openai_router(runtime, _embed, _vectors_json))

    app.include_router(search_router(runtime, _embed))  # /search, /papers/{id}, /subjects

    @app.post("/classify", responses=error_responses(*_COMMON))
    async def classify(body: ClassifyRequest, rt: Runtime = runtime) -> ClassifyResponse:
        """The most probable primary subjects of a text."""
        if rt.classifier is None:
            raise ApiError(503, "classifier_not_loaded", f"no classifier is loaded ({rt.classifier_absent})")
        vectors, _ = await _embed(rt, [body.text])
        probs = rt.classifier.predict_proba(l2_normalize(vectors))[0]
        order = np.argsort(-probs, kind="stable")[: body.top_n]
        top = [{"subject": rt.classifier.classes[i], "probability": float(probs[i])} for i in order]
        return ClassifyResponse(subject=top[0]["subject"], probability=top[0]["probability"], top=top)  # type: ignore[arg-type]

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def prometheus_metrics() -> Response:
        """Prometheus metrics: requests, latency, texts per request, inference batch sizes, queue."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            runtime = app.state.runtime
            dimensions = runtime.encoder.dimensions if runtime else None
            schema = publish_limits(
                schema, settings.max_items, settings.max_chars, dimensions, settings.openai_max_items
            )
            app.openapi_schema = publish_names(schema, (settings.model_name, *settings.model_aliases))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def __getattr__(name: str) -> FastAPI:
    # ``uvicorn serve.app:app``: the app from the environment's settings, built on first access.
    if name == "app":
        return create_app()
    raise AttributeError(name)
