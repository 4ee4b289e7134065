"""The API against a real ONNX MiniLM, a six-paper FAISS index and a three-subject classifier."""

from __future__ import annotations

import asyncio
import base64
import os
import threading
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient
from onnx_fixtures import ONNX_TEST_MAX_SEQ_LENGTH
from serve_helpers import changed

from arxiv_embed.onnx import OnnxEncoder
from serve.app import create_app, worker_cpus
from serve.batching import Batcher
from serve.schemas import EmbedResponse, OpenAIEmbeddingResponse
from serve.settings import Settings

pytest_plugins = ["onnx_fixtures"]  # onnx_minilm_dir: the bundled MiniLM exported once per session

LONG = "word " * 400  # ~400 tokens, more than the model reads


def assert_error(response: httpx.Response, status: int, error_type: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type"}
    assert body["error_type"] == error_type
    assert body["error"]
    return body


# --- health and info ---------------------------------------------------------------------------------------


def test_ready_is_503_until_the_model_is_loaded_health_is_liveness(settings: Settings) -> None:
    app = create_app(settings)
    assert_error(TestClient(app).get("/ready"), 503, "not_ready")  # lifespan not run: nothing loaded
    assert TestClient(app).get("/health").json() == {"status": "ok"}  # the process answers: alive
    with TestClient(app) as client:
        assert client.get("/ready").json() == {"status": "ok"}
        assert client.get("/health").json() == {"status": "ok"}
    assert_error(TestClient(app).get("/ready"), 503, "shutting_down")  # after shutdown


def test_info_describes_model_index_and_classifier(client: TestClient) -> None:
    info = client.get("/info").json()
    assert info["dimension"] == 384
    assert info["max_tokens"] == ONNX_TEST_MAX_SEQ_LENGTH
    assert info["index_size"] == 6
    assert info["classifier_classes"] == 3
    assert info["max_items"] == 8
    assert info["onnx_file"] == "model.onnx"
    assert info["version"]


# --- /embed ------------------------------------------------------------------------------------------------


def test_embed_matches_the_encoder(client: TestClient, encoder: OnnxEncoder) -> None:
    texts = ["Graph neural networks", "Dark matter in dwarf galaxies", "Prime numbers"]
    response = client.post("/embed", json={"input": texts})
    EmbedResponse.model_validate_json(response.content)  # the documented shape, written by orjson
    body = response.json()
    assert body["dimension"] == 384
    assert body["tokens"] == encoder.count_tokens(texts)
    got = np.array(body["embeddings"], dtype=np.float32)
    np.testing.assert_allclose(got, encoder.encode(texts, normalize=True), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_embed_one_text_and_without_normalisation(client: TestClient, encoder: OnnxEncoder) -> None:
    single = client.post("/embed", json={"input": "Prime numbers"}).json()
    raw = client.post("/embed", json={"input": ["Prime numbers"], "normalize": False}).json()
    assert len(single["embeddings"]) == 1
    raw_vec = np.array(raw["embeddings"][0])
    np.testing.assert_allclose(raw_vec, encoder.encode(["Prime numbers"], normalize=False)[0], atol=1e-5)
    assert abs(np.linalg.norm(raw_vec) - 1.0) > 1e-3
    np.testing.assert_allclose(raw_vec / np.linalg.norm(raw_vec), single["embeddings"][0], atol=1e-6)


def test_embed_truncates_long_texts_by_default(client: TestClient, encoder: OnnxEncoder) -> None:
    response = client.post("/embed", json={"input": LONG})
    assert response.status_code == 200
    assert response.json()["tokens"] == encoder.count_tokens([LONG])
    np.testing.assert_allclose(response.json()["embeddings"][0], encoder.encode([LONG])[0], atol=1e-5)


def test_embed_without_truncation_refuses_a_long_text_with_its_token_count(
    client: TestClient, encoder: OnnxEncoder
) -> None:
    (count,) = encoder.count_tokens([LONG])
    body = assert_error(
        client.post("/embed", json={"input": ["short", LONG], "truncate": False}), 413, "too_many_tokens"
    )
    assert f"text 1 has {count} tokens" in body["error"]
    assert client.post("/embed", json={"input": "short", "truncate": False}).status_code == 200


def test_too_many_inputs_is_413(client: TestClient) -> None:
    assert_error(client.post("/embed", json={"input": ["a"] * 9}), 413, "too_many_inputs")
    assert_error(client.post("/v1/embeddings", json={"input": ["a"] * 2049}), 413, "too_many_inputs")
    assert client.post("/embed", json={"input": ["a"] * 8}).status_code == 200


def test_too_long_text_is_413(client: TestClient) -> None:
    assert_error(client.post("/embed", json={"input": "x" * 5001}), 413, "text_too_long")
    assert_error(client.post("/search", json={"text": "x" * 5001}), 413, "text_too_long")


def test_too_large_body_is_413_with_or_without_content_length(client: TestClient) -> None:
    big = b'{"input": "' + b"x" * 70_000 + b'"}'
    assert_error(client.post("/embed", content=big), 413, "too_large")
    chunked = client.post("/embed", content=iter([big[:40_000], big[40_000:]]))  # no Content-Length
    assert_error(chunked, 413, "too_large")
    json_type = {"Content-Type": "application/json"}
    ok = client.post("/embed", content=iter([b'{"input": ', b'"hello"}']), headers=json_type)
    assert ok.status_code == 200
    untyped = assert_error(client.post("/embed", content=b'{"input": "hello"}'), 422, "invalid_request")
    assert "Content-Type: application/json" in untyped["error"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/embed", {"input": []}),
        ("/embed", {"input": 3}),
        ("/embed", {"input": ["ok", None]}),
        ("/embed", {}),
        ("/embed", {"input": "a", "normalise": True}),
        ("/embed", {"input": "a", "truncate": "maybe"}),
        ("/embed", {"input": "a", "normalize": 0}),  # strict: no coercion the schema does not allow
        ("/search", {"text": "a", "k": "5"}),
        ("/v1/embeddings", {"input": "a", "model": "m", "encoding_format": "int8"}),
        ("/v1/embeddings", {"input": "a", "model": "m", "dimensions": 385}),
        ("/v1/embeddings", {"input": "a", "model": "m", "dimensions": 100}),  # not a size it was evaluated at
        ("/v1/embeddings", {"input": [[1, 2, 3]], "model": "m"}),
        ("/search", {"text": "a", "k": 0}),
        ("/search", {"text": "a", "k": 101}),
        ("/search", {"k": 3}),
        ("/classify", {"text": "a", "top_n": 0}),
        ("/classify", {"text": ["a"]}),
    ],
)
def test_invalid_bodies_are_422(client: TestClient, path: str, body: dict) -> None:
    assert_error(client.post(path, json=body), 422, "invalid_request")


def test_malformed_json_is_422_lone_surrogates_are_replaced_unknown_routes_404(client: TestClient) -> None:
    json_type = {"Content-Type": "application/json"}
    assert_error(client.post("/embed", content=b'{"input": ', headers=json_type), 422, "invalid_request")
    lone_surrogate = b'{"input": ["ok", "a\\ud800b"]}'  # valid JSON, not valid unicode: read as U+FFFD
    got = client.post("/embed", content=lone_surrogate, headers=json_type).json()["embeddings"]
    expected = client.post("/embed", json={"input": ["ok", "a\ufffdb"]}).json()["embeddings"]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert_error(client.get("/nowhere"), 404, "not_found")
    assert_error(client.get("/embed"), 405, "method_not_allowed")


# --- /search and /classify ---------------------------------------------------------------------------------


def test_search_finds_the_closest_paper(client: TestClient) -> None:
    body = client.post(
        "/search", json={"text": "message passing networks on molecular graphs", "k": 3}
    ).json()
    results = body["results"]
    assert [r["rank"] for r in results] == [1, 2, 3]
    assert {key: results[0][key] for key in ("rank", "id", "title", "subject")} == {
        "rank": 1,
        "id": "2101.00001",
        "title": "Graph neural networks for molecule property prediction",
        "subject": "cs.LG",
    }
    # An index of an older faiss_build (id, title, subject only): the other fields are empty, links are there.
    assert (
        results[0]["subjects"] == ["cs.LG"] and results[0]["authors"] == [] and results[0]["abstract"] == ""
    )
    assert results[0]["url"] == "https://arxiv.org/abs/2101.00001"
    assert results[0]["pdf_url"] == "https://arxiv.org/pdf/2101.00001"
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    everything = client.post("/search", json={"text": "galaxies", "k": 100}).json()["results"]
    assert len(everything) == 6  # k above the index size returns the whole index
    assert everything[0]["subject"] == "astro-ph.GA"


def test_search_scores_are_cosine_similarities(client: TestClient, encoder: OnnxEncoder) -> None:
    query = "prime numbers"
    top = client.post("/search", json={"text": query, "k": 1}).json()["results"][0]
    q, paper = encoder.encode([query, top["title"]], normalize=True)
    assert top["score"] == pytest.approx(float(q @ paper), abs=1e-5)


def test_classify_returns_softmax_of_the_logistic_regression(
    client: TestClient, classifier_dir: Path, encoder: OnnxEncoder
) -> None:
    text = "rotation curves of spiral galaxies and dark matter"
    body = client.post("/classify", json={"text": text, "top_n": 2}).json()
    assert body["subject"] == "astro-ph.GA"
    coef = np.load(classifier_dir / "coef.npy")
    logits = coef @ encoder.encode([text], normalize=True)[0]
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert body["probability"] == pytest.approx(probs.max(), abs=1e-5)
    assert len(body["top"]) == 2
    assert body["top"][0] == {"subject": "astro-ph.GA", "probability": pytest.approx(probs.max(), abs=1e-5)}
    all_three = client.post("/classify", json={"text": text, "top_n": 50}).json()["top"]
    assert sum(p["probability"] for p in all_three) == pytest.approx(1.0, abs=1e-5)


def test_int8_model_serves_close_to_fp32(settings: Settings, encoder: OnnxEncoder) -> None:
    texts = ["Graph neural networks", "Dark matter halos of dwarf galaxies"]
    with TestClient(create_app(changed(settings, onnx_file="model_int8.onnx"))) as client:
        assert client.get("/info").json()["onnx_file"] == "model_int8.onnx"
        got = np.array(client.post("/embed", json={"input": texts}).json()["embeddings"])
    cosine = (got * encoder.encode(texts, normalize=True)).sum(axis=1)
    assert cosine.min() > 0.98
    assert cosine.max() < 0.99999  # really the int8 graph


def test_search_and_classify_are_503_without_index_or_classifier(settings: Settings) -> None:
    bare = changed(settings, index_dir=None, classifier_dir=settings.classifier_dir / "missing")
    with TestClient(create_app(bare)) as client:
        assert client.get("/info").json()["index_size"] is None
        assert_error(client.post("/search", json={"text": "a"}), 503, "index_not_loaded")
        body = assert_error(client.post("/classify", json={"text": "a"}), 503, "classifier_not_loaded")
        assert "coef.npy" in body["error"]
        assert client.post("/embed", json={"input": "a"}).status_code == 200


# --- keys, overload, metrics -------------------------------------------------------------------------------


def test_api_key_is_required_when_set(settings: Settings) -> None:
    with TestClient(create_app(changed(settings, api_key="s3cret"))) as client:
        assert_error(client.post("/embed", json={"input": "a"}), 401, "unauthorized")
        wrong = {"Authorization": "Bearer nope"}
        assert_error(client.post("/embed", json={"input": "a"}, headers=wrong), 401, "unauthorized")
        bearer = {"Authorization": "Bearer s3cret"}
        assert client.post("/embed", json={"input": "a"}, headers=bearer).status_code == 200
        assert client.get("/info", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.get("/health").status_code == 200  # probes need no key
        assert client.get("/metrics").status_code == 200


def test_full_queue_is_429(settings: Settings, encoder: OnnxEncoder) -> None:
    """One request in inference (held by a gate), one text queued; with max_queue=2 texts in progress (in
    inference or queued) the third is refused."""
    app = create_app(changed(settings, max_queue=2))
    gate = threading.Event()

    def slow_encode(texts: list[str]) -> np.ndarray:
        gate.wait(timeout=30)
        return encoder.encode(texts, normalize=False)

    async def scenario() -> list[int]:
        runtime = app.state.runtime
        await runtime.batcher.stop()
        runtime.batcher = Batcher(slow_encode, max_batch_size=1, max_wait_s=0, max_queue=1)
        runtime.batcher.start()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            first = asyncio.create_task(http.post("/embed", json={"input": "one"}))
            await asyncio.sleep(0.2)  # in inference, waiting at the gate
            second = asyncio.create_task(http.post("/embed", json={"input": "two"}))
            await asyncio.sleep(0.2)  # queued
            third = await http.post("/embed", json={"input": "three"})
            assert_error(third, 429, "overloaded")
            assert third.headers["retry-after"] == "1"
            gate.set()
            return [(await first).status_code, (await second).status_code, third.status_code]

    async def run() -> list[int]:
        async with app.router.lifespan_context(app):
            return await scenario()

    assert asyncio.run(run()) == [200, 200, 429]


def test_metrics_count_requests_latency_and_batches(client: TestClient) -> None:
    client.post("/embed", json={"input": ["a", "b", "c"]})
    client.post("/embed", json={"input": []})
    text = client.get("/metrics").text
    assert 'http_requests_total{method="POST",route="/embed",status="200"}' in text
    assert 'http_requests_total{method="POST",route="/embed",status="422"}' in text
    assert 'http_request_duration_seconds_count{route="/embed"}' in text
    assert "inference_batch_texts_bucket" in text
    assert 'request_texts_bucket{le="4.0"}' in text
    assert "inference_queue_requests 0.0" in text


# --- OpenAI compatibility ----------------------------------------------------------------------------------


def test_openai_client_round_trip(live_url: str, encoder: OnnxEncoder) -> None:
    """The official client against uvicorn on a loopback port, in the three encodings."""
    client = openai.OpenAI(base_url=f"{live_url}/v1", api_key="test-key", max_retries=0)
    texts = ["Graph neural networks", "Dark matter halos"]
    expected = encoder.encode(texts, normalize=True)
    for encoding_format in (openai.NOT_GIVEN, "float", "base64"):
        result = client.embeddings.create(
            model="arxiv-embed-minilm", input=texts, encoding_format=encoding_format
        )
        assert [d.index for d in result.data] == [0, 1]
        if encoding_format == "base64":  # asked for explicitly, the client hands the strings back as they are
            got = np.stack([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in result.data])
        else:  # the client asks for base64 by default and decodes it itself
            got = np.array([d.embedding for d in result.data], dtype=np.float32)
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert result.usage.prompt_tokens == sum(encoder.count_tokens(texts))
        assert result.model == "arxiv-embed-minilm"
    single = client.embeddings.create(model="arxiv-embed-minilm", input="Graph neural networks")
    np.testing.assert_allclose(single.data[0].embedding, expected[0], atol=1e-5)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{live_url}/v1", api_key="wrong", max_retries=0).embeddings.create(
            model="m", input="a"
        )


def test_openai_dimensions_keep_the_first_components_renormalised(client: TestClient) -> None:
    full = client.post("/v1/embeddings", json={"input": "abc"}).json()["data"][0]["embedding"]
    short = client.post("/v1/embeddings", json={"input": "abc", "dimensions": 8}).json()["data"][0][
        "embedding"
    ]
    head = np.array(full[:8])
    np.testing.assert_allclose(short, head / np.linalg.norm(head), atol=1e-6)


def test_dimensions_are_only_the_sizes_the_model_was_evaluated_at(client: TestClient) -> None:
    info = client.get("/info").json()
    assert info["dimensions"] == [384, 128, 8] and info["dimension"] == 384
    refused = client.post("/v1/embeddings", json={"input": "abc", "dimensions": 100})
    assert refused.status_code == 422
    assert "one of 384, 128, 8" in refused.json()["error"]
    assert (
        len(
            client.post("/v1/embeddings", json={"input": "abc", "dimensions": 128}).json()["data"][0][
                "embedding"
            ]
        )
        == 128
    )


def test_base64_is_little_endian_float32(client: TestClient) -> None:
    as_base64 = client.post("/v1/embeddings", json={"input": "abc", "encoding_format": "base64"})
    as_floats = client.post("/v1/embeddings", json={"input": ["abc", "d"]})
    for response in (as_base64, as_floats):  # the documented shape, written by orjson
        OpenAIEmbeddingResponse.model_validate_json(response.content)
    data, floats = as_base64.json()["data"], as_floats.json()["data"]
    decoded = np.frombuffer(base64.b64decode(data[0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, floats[0]["embedding"], atol=1e-7)


def test_lone_calls_use_the_solo_encoder_with_the_same_vectors(
    settings: Settings, encoder: OnnxEncoder
) -> None:
    texts = ["Graph neural networks for molecules", "Dark matter halos of dwarf galaxies"]
    app = create_app(changed(settings, threads=1, solo_threads=2, solo_min_tokens=0))
    with TestClient(app) as client:
        solo = app.state.runtime.solo_encoder
        assert solo is not None and solo.model_file == settings.onnx_file
        got = np.array(client.post("/embed", json={"input": texts}).json()["embeddings"])
    np.testing.assert_allclose(got, encoder.encode(texts, normalize=True), atol=1e-5)
    off = create_app(changed(settings, threads=1, solo_threads=1))
    with TestClient(off):
        assert off.state.runtime.solo_encoder is None


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="thread affinity is Linux-only")
def test_worker_cpus_one_usable_core_per_worker(settings: Settings) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    assert worker_cpus(settings, 1) == allowed[:1]
    assert worker_cpus(settings, len(allowed)) == allowed
    assert worker_cpus(settings, len(allowed) + 1) is None  # more workers than cores: the OS places them
    assert worker_cpus(changed(settings, pin_workers=False), 1) is None
