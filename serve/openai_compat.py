"""OpenAI-compatible routes: ``POST /v1/embeddings``, ``GET /v1/models`` and ``GET /v1/models/{id}``.

As OpenAI's API: up to ``openai_max_items`` (2,048) inputs per request, cut here into pieces of ``max_items``
that queue one after another (so one large request neither takes the whole queue nor waits for room for all
of it); an empty or blank input (nothing left once control, invisible and space characters are removed) is a
400; a ``model`` other than the served model's name or one of its aliases (``model_aliases``: by default the
base model's hub id) is a 404 ``model_not_found``.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import APIRouter
from fastapi.responses import Response

from arxiv_embed.pooling import l2_normalize
from arxiv_embed.text import clean_text
from serve.errors import ApiError
from serve.schemas import (
    OpenAIEmbeddingRequest,
    OpenAIEmbeddingResponse,
    OpenAIModel,
    OpenAIModels,
    error_responses,
)

if TYPE_CHECKING:
    from serve.app import Runtime

Embed = Callable[["Runtime", list[str]], Awaitable[tuple[np.ndarray, list[int]]]]
VectorsJson = Callable[[dict[str, Any]], Response]

CREATED = 0  # the model's creation time is not known here; OpenAI's clients only read the field
_ASCII_BLANK = "".join(map(chr, range(33))) + "\x7f"  # ASCII controls, space and DEL


def blank_inputs(texts: list[str]) -> list[int]:
    """Indices of the texts with nothing to embed: empty, or only whitespace, control (NUL) or invisible
    (zero-width) characters, as ``arxiv_embed.text.clean_text`` removes them."""
    return [
        i
        for i, text in enumerate(texts)
        if not (text.strip(_ASCII_BLANK) if text.isascii() else clean_text(text))
    ]


def served_names(rt: Runtime) -> tuple[str, ...]:
    return (rt.settings.model_name, *rt.settings.model_aliases)


def check_model(rt: Runtime, model: str | None) -> None:
    if model is not None and model not in served_names(rt):
        names = ", ".join(repr(n) for n in served_names(rt))
        raise ApiError(404, "model_not_found", f"model {model!r} is not served here; use one of {names}")


def publish_names(openapi: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """Write the accepted model names into the OpenAPI schema, as the enum of ``model`` and of ``{model_id}``."""
    model = openapi["components"]["schemas"]["OpenAIEmbeddingRequest"]["properties"]["model"]
    for option in model.get("anyOf", []):
        if option.get("type") == "string":
            option["enum"] = list(names)
    for parameter in openapi["paths"]["/v1/models/{model_id}"]["get"].get("parameters", []):
        if parameter["name"] == "model_id":
            parameter["schema"]["enum"] = list(names)
    return openapi


def _card(rt: Runtime) -> OpenAIModel:
    return OpenAIModel(id=rt.settings.model_name, created=CREATED, owned_by="arxiv-embed")


def openai_router(runtime: Any, embed: Embed, vectors_json: VectorsJson) -> APIRouter:
    """The routes, given the app's runtime dependency, its embedding function and its vectors response."""
    router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])
    errors = error_responses(400, 401, 404, 413, 422, 429, 503)

    @router.get("/models", responses=errors)
    async def list_models(rt: Runtime = runtime) -> OpenAIModels:
        """The served model (its aliases are accepted as ``model`` too, see ``GET /v1/models/{id}``)."""
        return OpenAIModels(data=[_card(rt)])

    @router.get("/models/{model_id:path}", responses=errors)
    async def get_model(model_id: str, rt: Runtime = runtime) -> OpenAIModel:
        """The served model, by its name or an alias; 404 ``model_not_found`` for any other."""
        check_model(rt, model_id)
        return _card(rt)

    @router.post("/embeddings", response_model=OpenAIEmbeddingResponse, responses=errors)
    async def embeddings(body: OpenAIEmbeddingRequest, rt: Runtime = runtime) -> Response:
        """OpenAI-compatible embeddings (always L2-normalised, truncated to the model's max tokens)."""
        if body.dimensions is not None and body.dimensions not in rt.encoder.dimensions:
            sizes = ", ".join(map(str, rt.encoder.dimensions))
            raise ApiError(
                422,
                "invalid_request",
                f"dimensions: {body.dimensions} is not a size this model was evaluated at; one of {sizes}",
            )
        check_model(rt, body.model)
        texts = [body.input] if isinstance(body.input, str) else body.input
        limit = rt.settings.openai_max_items
        if len(texts) > limit:
            rt.metrics.rejected.labels("too_many_inputs").inc()
            raise ApiError(413, "too_many_inputs", f"{len(texts)} inputs; at most {limit} per request")
        blank = blank_inputs(texts)
        if blank:
            rt.metrics.rejected.labels("empty_input").inc()
            shown = ", ".join(map(str, blank[:10])) + (", ..." if len(blank) > 10 else "")
            raise ApiError(400, "empty_input", f"input {shown} is empty or blank: nothing to embed")
        step = rt.settings.max_items
        parts = [await embed(rt, texts[i : i + step]) for i in range(0, len(texts), step)]
        vectors = np.concatenate([v for v, _ in parts])
        tokens = [t for _, ts in parts for t in ts]
        if body.dimensions is not None:  # OpenAI's shortening: the first n dimensions, re-normalised
            vectors = vectors[:, : body.dimensions]
        vectors = l2_normalize(vectors).astype("<f4", copy=False)
        if body.encoding_format == "base64":
            data = [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": base64.b64encode(v.tobytes()).decode("ascii"),
                }
                for i, v in enumerate(vectors)
            ]
        else:
            vectors = np.ascontiguousarray(vectors)  # orjson writes contiguous arrays only
            data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        used = sum(min(t, rt.encoder.max_seq_length) for t in tokens)
        return vectors_json(
            {
                "object": "list",
                "data": data,
                "model": rt.settings.model_name,
                "usage": {"prompt_tokens": used, "total_tokens": used},
            }
        )

    return router
