"""Fixtures of the API tests: the bundled MiniLM as ONNX (``onnx_minilm_dir``, exported once per run), a tiny
FAISS index of six papers and a three-subject classifier built from real embeddings, and running apps."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from serve_helpers import changed, served_in_thread

from arxiv_embed.onnx import OnnxEncoder
from serve.app import create_app
from serve.settings import Settings

PAPERS = [
    ("2101.00001", "Graph neural networks for molecule property prediction", "cs.LG"),
    ("2101.00002", "Dark matter halos of dwarf galaxies", "astro-ph.GA"),
    ("2101.00003", "Prime gaps and the distribution of primes in arithmetic progressions", "math.NT"),
    ("2101.00004", "Attention-based transformers for machine translation", "cs.LG"),
    ("2101.00005", "Star formation in spiral galaxy arms", "astro-ph.GA"),
    ("2101.00006", "Elliptic curves over number fields and their ranks", "math.NT"),
]
SUBJECTS = ["astro-ph.GA", "cs.LG", "math.NT"]


@pytest.fixture(scope="session")
def encoder(onnx_minilm_dir: Path) -> OnnxEncoder:
    return OnnxEncoder(onnx_minilm_dir)


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory: pytest.TempPathFactory, encoder: OnnxEncoder) -> Path:
    """An exact inner-product index of the six papers' titles, with its metadata table."""
    folder = tmp_path_factory.mktemp("faiss")
    vectors = encoder.encode([title for _, title, _ in PAPERS], normalize=True)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    faiss.write_index(index, str(folder / "index.faiss"))
    pd.DataFrame(PAPERS, columns=["id", "title", "subject"]).to_parquet(folder / "meta.parquet")
    return folder


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory, encoder: OnnxEncoder) -> Path:
    """Nearest-centroid logistic regression: a subject's weights are 20 x the mean of its papers' vectors."""
    folder = tmp_path_factory.mktemp("classifier")
    vectors = encoder.encode([title for _, title, _ in PAPERS], normalize=True)
    subjects = np.array([s for _, _, s in PAPERS])
    coef = np.stack([20 * vectors[subjects == s].mean(axis=0) for s in SUBJECTS]).astype(np.float32)
    np.save(folder / "coef.npy", coef)
    np.save(folder / "intercept.npy", np.zeros(len(SUBJECTS), dtype=np.float32))
    (folder / "classes.json").write_text(json.dumps(SUBJECTS))
    return folder


@pytest.fixture(scope="session")
def settings(onnx_minilm_dir: Path, index_dir: Path, classifier_dir: Path) -> Settings:
    return Settings(
        model_dir=onnx_minilm_dir,
        onnx_file="model.onnx",  # the fp32 graph, so vectors compare exactly with the `encoder` fixture
        index_dir=index_dir,
        classifier_dir=classifier_dir,
        max_items=8,
        max_chars=5000,
        max_body_bytes=64_000,
    )


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    """The full app (model, index, classifier) after its lifespan start."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def live_url(settings: Settings) -> Iterator[str]:
    """The app served by uvicorn on a real loopback port (in a thread of this process)."""
    with served_in_thread(create_app(changed(settings, api_key="test-key"))) as url:
        yield url
