"""OpenAI compatibility: 2,048 inputs per request, blank inputs refused, model names, /v1/models, and the
``openai`` and ``langchain-openai`` clients with their defaults against a real server."""

from __future__ import annotations

import httpx
import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient
from langchain_openai import OpenAIEmbeddings
from test_api import assert_error

from arxiv_embed.onnx import OnnxEncoder
from serve.openai_compat import blank_inputs

pytest_plugins = ["onnx_fixtures"]

MODEL = "arxiv-embed-minilm"
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def test_blank_inputs_are_empty_whitespace_control_or_invisible() -> None:
    texts = ["", " \n\t", "\x00\x00", "\u200b\u200b", "\ufeff", "\u3000", "\x01", "a", " x ", "é", "\u200bé"]
    assert blank_inputs(texts) == [0, 1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("blank", ["", "   ", "\x00", "\u200b\u200c\u2060", "\ufeff \n"])
def test_blank_input_is_400_in_the_error_shape(client: TestClient, blank: str) -> None:
    body = assert_error(client.post("/v1/embeddings", json={"input": ["fine", blank]}), 400, "empty_input")
    assert "input 1" in body["error"]
    assert_error(client.post("/v1/embeddings", json={"input": blank}), 400, "empty_input")


def test_2048_inputs_are_split_into_pieces_inside(client: TestClient, encoder: OnnxEncoder) -> None:
    """The fixture's max_items is 8: 2,048 inputs are 256 pieces, in order; 2,049 are a 413."""
    texts = [f"paper {i}" for i in range(2048)]
    response = client.post("/v1/embeddings", json={"input": texts, "model": MODEL})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [d["index"] for d in data] == list(range(2048))
    picked = [0, 7, 8, 1000, 2047]
    got = np.array([data[i]["embedding"] for i in picked], dtype=np.float32)
    np.testing.assert_allclose(got, encoder.encode([texts[i] for i in picked], normalize=True), atol=1e-5)
    assert response.json()["usage"]["prompt_tokens"] == sum(encoder.count_tokens(texts))
    assert_error(client.post("/v1/embeddings", json={"input": [*texts, "one more"]}), 413, "too_many_inputs")
    assert_error(
        client.post("/embed", json={"input": texts[:9]}), 413, "too_many_inputs"
    )  # /embed: as before
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    array = next(o for o in schema["OpenAIEmbeddingRequest"]["properties"]["input"]["anyOf"] if "items" in o)
    assert array["maxItems"] == 2048


def test_model_names_served_model_and_aliases(client: TestClient) -> None:
    for model in (MODEL, BASE_MODEL, None):
        body = {"input": "abc"} | ({"model": model} if model else {})
        assert client.post("/v1/embeddings", json=body).status_code == 200
    body = assert_error(
        client.post("/v1/embeddings", json={"input": "abc", "model": "text-embedding-3-small"}),
        404,
        "model_not_found",
    )
    assert MODEL in body["error"]
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == [MODEL]
    assert models["data"][0]["object"] == "model"
    assert client.get(f"/v1/models/{MODEL}").json()["id"] == MODEL
    assert client.get(f"/v1/models/{BASE_MODEL}").json()["id"] == MODEL  # an alias, slash and all
    assert_error(client.get("/v1/models/gpt-4"), 404, "model_not_found")


def test_openai_client_defaults(live_url: str, encoder: OnnxEncoder) -> None:
    client = openai.OpenAI(base_url=f"{live_url}/v1", api_key="test-key", max_retries=0)
    texts = [f"Abstract number {i} about graph neural networks" for i in range(100)]  # more than 64
    result = client.embeddings.create(model=MODEL, input=texts)
    got = np.array([d.embedding for d in result.data], dtype=np.float32)
    np.testing.assert_allclose(got, encoder.encode(texts, normalize=True), atol=1e-5)
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError) as missing:
        client.embeddings.create(model="text-embedding-3-small", input="a")
    assert missing.value.response.json()["error_type"] == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=MODEL, input=["a", ""])


def test_langchain_openai_embeddings_with_its_default_chunk_size(live_url: str, encoder: OnnxEncoder) -> None:
    """OpenAIEmbeddings sends 1,000 documents per request by default: 1,001 documents are two requests."""
    embeddings = OpenAIEmbeddings(
        model=MODEL,
        base_url=f"{live_url}/v1",
        api_key="test-key",  # type: ignore[arg-type]
        check_embedding_ctx_length=False,
        max_retries=0,
    )
    assert embeddings.chunk_size == 1000
    docs = [f"document {i}: dark matter halos of dwarf galaxies" for i in range(1001)]
    vectors = np.array(embeddings.embed_documents(docs), dtype=np.float32)
    assert vectors.shape == (1001, 384)
    picked = [0, 999, 1000]
    np.testing.assert_allclose(
        vectors[picked], encoder.encode([docs[i] for i in picked], normalize=True), atol=1e-5
    )
    query = np.array(embeddings.embed_query("dark matter"), dtype=np.float32)
    np.testing.assert_allclose(query, encoder.encode(["dark matter"], normalize=True)[0], atol=1e-5)


def test_v1_routes_need_the_key(live_url: str) -> None:
    assert httpx.get(f"{live_url}/v1/models").status_code == 401
    assert httpx.get(f"{live_url}/v1/models", headers={"Authorization": "Bearer test-key"}).status_code == 200
