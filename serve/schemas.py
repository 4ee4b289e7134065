"""Request and response bodies of the API.

Limits that depend on the settings (texts per request, characters per text) are checked in the endpoints,
which answer 413; the fixed ones (k, top_n, non-empty lists) are in the schemas and answer 422.
"""

from __future__ import annotations

import difflib
import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    model_validator,
)

from arxiv_embed.subjects import KNOWN, canonical


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


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """A route's documented error statuses, each answered in the :class:`ErrorResponse` shape."""
    return {code: {"model": ErrorResponse} for code in codes}


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


def _iso_date(value: object) -> object:
    # Only "YYYY-MM-DD", a real calendar day (pydantic's lax mode would also take timestamps).
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("must be a date as YYYY-MM-DD")
    return date.fromisoformat(value)  # 2021-02-30: a ValueError, so a 422


IsoDate = Annotated[date, BeforeValidator(_iso_date), Field(examples=["2021-01-31"])]
PaperId = Annotated[str, Field(min_length=1, max_length=64, examples=["2101.00001", "hep-th/9901001"])]


def _subject(value: str) -> str:
    # arXiv's canonical code (cs.NA -> math.NA); a code arXiv does not have is a 422 with close matches.
    name = canonical(value)
    if name is None:
        lower = {subject.lower(): subject for subject in ARXIV_SUBJECTS}
        close = [lower[c] for c in difflib.get_close_matches(value.lower(), list(lower), n=3, cutoff=0.6)]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"{value!r} is not an arXiv subject{hint} (GET /subjects lists the index's)")
    return name


ARXIV_SUBJECTS = sorted(KNOWN)
Subject = Annotated[str, AfterValidator(_subject), Field(json_schema_extra={"enum": ARXIV_SUBJECTS})]


class SearchFilters(_Request):
    """Which papers may be returned; every condition is optional and they all apply."""

    subjects: Annotated[list[Subject], Field(max_length=500)] = Field(
        [], description="keep only papers with one of these subjects (empty: all subjects)"
    )
    exclude_subjects: Annotated[list[Subject], Field(max_length=500)] = Field(
        [], description="drop papers with one of these subjects"
    )
    match: Literal["primary", "any"] = Field(
        "primary", description="subjects are compared with the primary subject, or with any of the categories"
    )
    date_from: IsoDate | None = Field(
        None, description="first day kept (YYYY-MM-DD), on `published`, else `update_date`"
    )
    date_to: IsoDate | None = Field(None, description="last day kept (YYYY-MM-DD), inclusive")
    exclude_ids: Annotated[list[PaperId], Field(max_length=1000)] = Field(
        [], description="papers to leave out (ids not in the index are ignored)"
    )

    @model_validator(mode="after")
    def _dates_in_order(self) -> SearchFilters:
        if self.date_from is not None and self.date_to is not None and self.date_from > self.date_to:
            raise ValueError(f"date_from {self.date_from} is after date_to {self.date_to}")
        return self


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class OpenAIModels(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class SearchRequest(_Request):
    # Exactly one of text and paper_id (the schema's oneOf); neither takes null.
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"oneOf": [{"required": ["text"]}, {"required": ["paper_id"]}]}
    )

    text: Text = Field(None, description="a query text (title, abstract, words); or send paper_id")  # type: ignore[assignment]
    paper_id: PaperId = Field(  # type: ignore[assignment]
        None, description="an indexed paper: papers like it, from its stored vector; or send text"
    )
    k: Integer = Field(10, ge=1, le=100, description="papers to return")
    filters: SearchFilters = Field(default_factory=SearchFilters)
    include_self: StrictBool = Field(False, description="with paper_id: keep the query paper in the results")

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        if (self.text is None) == (self.paper_id is None):
            raise ValueError("send exactly one of text or paper_id")
        return self


class PaperRecord(BaseModel):
    id: str
    title: str
    subject: str = Field(description="primary subject")
    subjects: list[str] = Field(description="all categories, primary first")
    authors: list[str] = Field(description="empty when the index has none")
    published: str = Field(description="first version, YYYY-MM-DD; empty when unknown")
    update_date: str = Field(description="last update, YYYY-MM-DD; empty when unknown")
    abstract: str
    url: str = Field(description="the paper's arXiv page")
    pdf_url: str


class Paper(PaperRecord):
    rank: int
    score: float = Field(description="cosine similarity to the query")
    snippet: str = Field(description="the abstract's first ~300 characters, cut at a word")


class SearchQuery(BaseModel):
    text: str | None
    paper_id: str | None


class SearchResponse(BaseModel):
    model: str
    query: SearchQuery
    matched: int = Field(description="papers that pass the filters (the index size without filters)")
    exact: bool = Field(description="the results are exactly the best k of the matched papers")
    results: list[Paper]


class SubjectCount(BaseModel):
    subject: str
    primary: int = Field(description="papers with this primary subject")
    any: int = Field(description="papers with this subject among their categories")


class SubjectsResponse(BaseModel):
    papers: int = Field(description="papers in the index")
    subjects: list[SubjectCount] = Field(description="by name")


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
