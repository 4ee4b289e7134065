"""Settings of the embedding API from the environment: ``ARXIV_EMBED_*``, and ``PORT`` as Cloud Run sets."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the API reads at start; tests build their own instance and pass it to ``create_app``."""

    model_config = SettingsConfigDict(env_prefix="ARXIV_EMBED_", frozen=True, extra="ignore")

    # What to load. The index and the classifier are optional: their endpoints answer 503 when absent.
    model_dir: Path = Path("models/onnx")
    # int8 by default: about twice as fast on CPU, within onnx_export's quality gates, and the file that
    # faiss_build embeds the index with (queries and index must come from the same graph).
    onnx_file: Literal["model.onnx", "model_int8.onnx"] = "model_int8.onnx"
    model_name: str = "arxiv-embed-minilm"
    index_dir: Path | None = Path("models/faiss")
    classifier_dir: Path | None = Path("models/classifier")

    # Request limits.
    max_items: int = Field(64, ge=1, description="texts per request (413 above)")
    max_chars: int = Field(20_000, ge=1, description="characters per text (413 above)")
    max_body_bytes: int = Field(4_000_000, ge=1024, description="request body size (413 above)")
    max_k: int = Field(100, ge=1, description="largest k of /search")

    # Dynamic batching: concurrent requests share one inference call.
    max_batch_size: int = Field(64, ge=1, description="texts per inference call")
    max_batch_tokens: int = Field(256, ge=1, description="padded tokens per inference call (texts x longest)")
    max_padding: float = Field(
        0.2, ge=0, le=1, description="share of padding tokens above which queued requests do not share a call"
    )
    max_wait_ms: float = Field(0.0, ge=0, description="extra wait to fill a batch; 0 = take what is queued")
    max_queue: int = Field(1024, ge=1, description="texts waiting for inference before 429")
    max_queue_wait_s: float = Field(
        5.0,
        gt=0,
        description="longest wait of a request for inference; a request still waiting is refused (503)",
    )
    inference_workers: int | None = Field(
        None, ge=1, description="inference calls that run side by side (None: one per usable core)"
    )
    threads: int | None = Field(1, ge=1, description="onnxruntime threads per call (None: one per core)")
    pin_workers: bool = Field(
        True,
        description="pin inference worker i to usable core i (Linux; only when workers <= usable cores)",
    )
    solo_threads: int | None = Field(
        None,
        ge=1,
        description="onnxruntime threads of a call that has the machine to itself (None: the usable cores; "
        "1 or <= threads: off)",
    )
    solo_min_tokens: int = Field(
        64, ge=0, description="padded tokens from which a lone call uses solo_threads"
    )

    # OpenAI compatibility (/v1): OpenAI takes up to 2,048 inputs per request; they are cut into pieces of
    # max_items inside. Besides model_name, /v1 accepts these names for the served model.
    openai_max_items: int = Field(2048, ge=1, description="inputs per /v1/embeddings request (413 above)")
    model_aliases: tuple[str, ...] = ("sentence-transformers/all-MiniLM-L6-v2",)

    # Life cycle: readiness after a warm-up call, draining on SIGTERM, slow clients.
    shutdown_grace_s: float = Field(
        8.0,
        gt=0,
        description="after SIGTERM: time to finish accepted work (queued work waits at most max_queue_wait_s, "
        "so it must be longer); Cloud Run kills 10 s after SIGTERM",
    )
    body_timeout_s: float = Field(30.0, gt=0, description="time to receive a request body (408 after)")
    warmup: bool = Field(True, description="one model call before /ready answers 200")
    log_format: Literal["text", "json"] = Field("text", description="json: one JSON object per log line")

    api_key: SecretStr | None = None
    host: str = "0.0.0.0"  # a container listens on all interfaces
    port: int = Field(8080, validation_alias=AliasChoices("PORT", "ARXIV_EMBED_PORT"))
    log_level: str = "info"

    @field_validator("api_key")
    @classmethod
    def _key_is_not_blank(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and not key.get_secret_value().strip():
            raise ValueError(
                "ARXIV_EMBED_API_KEY is empty or blank: unset it to serve without a key, or set a key"
            )
        return key

    @model_validator(mode="after")
    def _grace_covers_the_queue(self) -> Settings:
        if self.shutdown_grace_s < self.max_queue_wait_s + 1:
            raise ValueError(
                f"shutdown_grace_s = {self.shutdown_grace_s} must be at least max_queue_wait_s + 1 "
                f"= {self.max_queue_wait_s + 1}: queued work must be served or refused before the server stops"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    """The settings of this process, read once from the environment."""
    return Settings()


def settings_error(error: ValidationError) -> str:
    """One line naming each invalid setting, for a server that refuses to start."""
    parts = []
    for err in error.errors():
        name = ".".join(str(p) for p in err["loc"]) or "settings"
        parts.append(f"{name}: {err['msg'].removeprefix('Value error, ')}")
    return "invalid settings: " + "; ".join(parts)
