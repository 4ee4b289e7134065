"""Stage ir_eval: per-query evaluation with a fake encoder, the summary, and main() on the trained tiny project."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pipeline_helpers import copy_project, run_stages

from arxiv_embed.metrics import IRSample
from stages.ir_eval import evaluate, summarise

SUBJECTS = ["alpha", "beta", "gamma"]


class WordEncoder:
    """One-hot of the subject word a text starts with (the title), as ``encode_papers`` calls it."""

    def encode(self, texts: list[str], **kwargs: object) -> np.ndarray:
        return np.eye(len(SUBJECTS))[[SUBJECTS.index(t.split(".")[0]) for t in texts]]


def sample_of(queries: list[str], corpus: list[str]) -> IRSample:
    def frame(subjects: list[str], prefix: str) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "id": [f"{prefix}{i}" for i in range(len(subjects))],
                "title": subjects,
                "abstract": ["words"] * len(subjects),
                "subject": subjects,
            }
        )

    return IRSample(frame(queries, "q"), frame(corpus, "c"))


def test_evaluate_with_a_perfect_encoder() -> None:
    sample = sample_of(["alpha", "beta"], ["alpha"] * 4 + ["beta"] * 12 + ["gamma"] * 3)
    per_query, at_dims = evaluate(WordEncoder(), sample, "title_abstract", batch_size=4, name="fake")
    np.testing.assert_allclose(per_query["precision@10"], [0.4, 1.0])
    np.testing.assert_allclose(per_query["recall@10"], [1.0, 10 / 12])
    np.testing.assert_allclose(per_query["ndcg@10"], [1.0, 1.0])
    assert at_dims == {}


def test_evaluate_reports_each_matryoshka_dimension() -> None:
    sample = sample_of(["alpha", "beta"], ["alpha"] * 4 + ["beta"] * 12 + ["gamma"] * 3)
    full, at_dims = evaluate(WordEncoder(), sample, "title_abstract", 4, "fake", dims=[2, 1])
    assert set(at_dims) == {f"{k}_dim{d}" for k in ("precision@10", "map@100", "mrr@10") for d in (2, 1)}
    assert at_dims["precision@10_dim2"] == pytest.approx(
        full["precision@10"].mean()
    )  # alpha, beta on axes 0, 1
    assert at_dims["precision@10_dim1"] < at_dims["precision@10_dim2"]  # one axis cannot tell beta from gamma


def test_summarise_flat_metrics_gains_and_table() -> None:
    sample = sample_of(["alpha", "beta", "alpha"], ["alpha", "beta"])
    per_query = {
        "untuned": {k: np.array([0.1, 0.2, 0.3]) for k in ("precision@10", "mrr@10", "ndcg@10", "map@100")},
        "finetuned": {k: np.array([0.5, 0.0, 0.7]) for k in ("precision@10", "mrr@10", "ndcg@10", "map@100")},
    }
    metrics, table = summarise(per_query, sample)
    assert metrics["n_queries"] == 3 and metrics["n_corpus"] == 2
    assert metrics["untuned_precision@10"] == pytest.approx(0.2)
    assert metrics["finetuned_precision@10"] == pytest.approx(0.4)
    assert metrics["finetuned_gain_map@100"] == pytest.approx(0.2)
    assert set(metrics) == {"n_queries", "n_corpus"} | {
        f"{p}_{k}" for p in ("untuned", "finetuned", "finetuned_gain") for k in per_query["untuned"]
    }
    assert table.to_dict("list") == {
        "subject": ["alpha", "beta"],
        "untuned": pytest.approx([0.2, 0.2]),
        "finetuned": pytest.approx([0.6, 0.0]),
        "queries": [2, 1],
    }


def test_summarise_one_model_has_no_gain() -> None:
    sample = sample_of(["alpha"], ["alpha"])
    metrics, table = summarise({"untuned": {"precision@10": np.array([0.1])}}, sample)
    assert not any("gain" in k for k in metrics)
    assert list(table.columns) == ["subject", "untuned", "queries"]


@pytest.mark.slow
def test_main_smoke(trained_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(copy_project(trained_project, tmp_path / "project"))
    run_stages("ir_eval")
    metrics = json.loads(Path("metrics/ir_eval.json").read_text())
    for key in ("untuned_precision@10", "finetuned_precision@10", "finetuned_gain_precision@10", "n_queries"):
        assert key in metrics
    for name in ("precision@1", "precision@5", "recall@10", "mrr@10", "ndcg@10", "map@100"):
        assert 0 <= metrics[f"finetuned_{name}"] <= 1
    assert all(math.isfinite(v) for v in metrics.values())
    table = pd.read_csv("plots/ir_eval_per_subject.csv")
    assert list(table.columns) == ["subject", "untuned", "finetuned", "queries"]
    assert table["queries"].sum() == metrics["n_queries"]
