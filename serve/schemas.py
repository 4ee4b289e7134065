"""Request and response bodies of the API.

Limits that depend on the settings (texts per request, characters per text) are checked in the endpoints,
which answer 413; the fixed ones (k, top_n, non-empty lists) are in the schemas and answer 422.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool


def _json_integer(value: object) -> object:
    # As JSON Schema's "integer": 5 and 5.0, not "5" or true (which pydantic's lax mode would take).
    if isinstance(value, str | bool):
        raise ValueError("must be an integer")
    return value


Text = str
Texts = Annotated[list[str], Field(min_length=1)]
Integer = Annotated[int, BeforeValidator(_json_integer)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorResponse(BaseModel):
    error: str = Field(description="what went wrong, for a person")
    error_type: str = Field(description="stable machine-readable kind, e.g. too_many_inputs")


class HealthResponse(BaseModel):
    status: Literal["ok"]


class InfoResponse(BaseModel):
    model: str
    onnx_file: str
    dimension: int
    dimensions: list[int] = Field(
        description="vector sizes the model was evaluated at (full first): what `dimensions` may ask for"
    )
    index_dimension: int | None = Field(
        description="vector size of the search index; null when none is loaded"
    )
    max_tokens: int
    index_size: int | None = Field(description="papers in the search index; null when no index is loaded")
    classifier_classes: int | None = Field(description="subjects of the classifier; null when none is loaded")
    max_items: int
    max_chars: int
    version: str


class EmbedRequest(_Request):
    input: Text | Texts = Field(description="one text or a list of texts")
    normalize: StrictBool = Field(True, description="L2-normalise the embeddings")
    truncate: StrictBool = Field(
        True, description="cut texts to the model's max tokens; false: 413 if one is longer"
    )


class EmbedResponse(BaseModel):
    model: str
    dimension: int
    embeddings: list[list[float]]
    tokens: list[int] = Field(description="tokens of each text, special tokens included, before truncation")


class OpenAIEmbeddingRequest(BaseModel):
    """The body of OpenAI's ``POST /v1/embeddings`` (text inputs; token-id inputs are not supported)."""

    model_config = ConfigDict(extra="ignore")

    input: Text | Texts
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[Integer, Field(ge=1)] | None = Field(
        None, description="keep the first n dimensions, re-normalised"
    )
    user: str | None = None


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class OpenAIModels(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class SearchRequest(_Request):
    text: Text
    k: Integer = Field(10, ge=1, le=100, description="papers to return")


class Paper(BaseModel):
    rank: int
    score: float = Field(description="cosine similarity to the query")
    id: str
    title: str
    subject: str


class SearchResponse(BaseModel):
    model: str
    results: list[Paper]


class ClassifyRequest(_Request):
    text: Text
    top_n: Integer = Field(5, ge=1, le=100, description="most probable subjects to return")


class SubjectProbability(BaseModel):
    subject: str
    probability: float


class ClassifyResponse(BaseModel):
    subject: str = Field(description="the most probable primary subject")
    probability: float
    top: list[SubjectProbability]


def publish_limits(
    openapi: dict[str, Any],
    max_items: int,
    max_chars: int,
    dimensions: list[int] | None,
    openai_max_items: int | None = None,
) -> dict[str, Any]:
    """Write the configured limits into the OpenAPI schema (the endpoints enforce them: 413, 422)."""

    def limit(node: dict[str, Any]) -> None:
        if node.get("type") == "string":
            node["maxLength"] = max_chars
        elif node.get("type") == "array":
            node["maxItems"] = max_items
            limit(node["items"])
        for option in node.get("anyOf", []):
            limit(option)

    components = openapi.get("components", {}).get("schemas", {})
    for model, fields in _LIMITED_FIELDS.items():
        for name in fields:
            limit(components[model]["properties"][name])
    if openai_max_items is not None:  # /v1 takes more inputs than /embed
        for option in components["OpenAIEmbeddingRequest"]["properties"]["input"].get("anyOf", []):
            if option.get("type") == "array":
                option["maxItems"] = openai_max_items
    for option in components["OpenAIEmbeddingRequest"]["properties"]["dimensions"]["anyOf"]:
        if option.get("type") == "integer":  # pydantic leaves "ge" untranslated inside this union
            option.pop("ge", None)
            option["minimum"] = 1
            if dimensions:
                option["enum"] = sorted(dimensions)  # the sizes the model was evaluated at
    return openapi


_LIMITED_FIELDS = {
    "EmbedRequest": ["input"],
    "OpenAIEmbeddingRequest": ["input"],
    "SearchRequest": ["text"],
    "ClassifyRequest": ["text"],
}
