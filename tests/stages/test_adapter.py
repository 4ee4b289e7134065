"""stages/adapter.py on the tiny project: the adapted model, its reused embeddings and its metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pipeline_helpers import copy_project, run_stages

from arxiv_embed.adapter import adapter_of
from arxiv_embed.models import load_model

pytestmark = pytest.mark.slow


def test_main_writes_the_adapted_model_and_the_embeddings_logreg_reuses(trained_project: Path) -> None:
    metrics = json.loads((trained_project / "metrics" / "adapter.json").read_text())
    for key in (
        "papers",
        "encode_texts_per_second",
        "fit_seconds",
        "val_before_precision@10",
        "val_after_map@100",
    ):
        assert math.isfinite(metrics[f"adapter_{key}"]), key
    model = load_model(str(trained_project / "models" / "embedder"), device="cpu")
    hidden = yaml.safe_load((trained_project / "params.yaml").read_text())["adapter"]["hidden"]
    layers = adapter_of(model)
    shapes = [(2 * 384 + hidden, 384), (384, 2 * 384 + hidden)] if hidden else [(384, 384)]
    assert layers is not None and [w.shape for w, _ in layers] == shapes
    embeddings = pd.read_parquet(trained_project / "data" / "embeddings" / "train.parquet")
    train = pd.read_parquet(trained_project / "data" / "split" / "train.parquet")
    assert len(embeddings) == metrics["adapter_papers"] == 60  # adapter.n_papers of 72 train papers
    assert set(embeddings["id"]) <= set(train["id"])
    assert set(embeddings["subject"]) == set(train["subject"])  # stratified
    vectors = np.stack(embeddings["embedding"].to_numpy())
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_method_none_passes_the_fine_tuned_model_on(
    trained_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(copy_project(trained_project, tmp_path / "project"))
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["adapter"]["method"] = "none"
    Path("params.yaml").write_text(yaml.safe_dump(params))
    run_stages("adapter")
    model = load_model("models/embedder", device="cpu")
    assert adapter_of(model) is None
    assert len(pd.read_parquet("data/embeddings/train.parquet")) == 0
    assert json.loads(Path("metrics/adapter.json").read_text()) == {"adapter_papers": 0}
