"""Stage tfidf_baseline: texts, the vectoriser, the baseline on tiny splits, and main()."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from pipeline_helpers import make_papers, run_stages

from arxiv_embed.params import IREvalParams, LogregParams
from arxiv_embed.text import papers_texts
from stages.prepare import parse_record
from stages.tfidf_baseline import TfidfParams, fit_vectorizer, tfidf_baseline

PARAMS = TfidfParams(max_features=500, ngram_max=2, min_df=1, sublinear_tf=True)
IR = IREvalParams(n_queries=12, n_corpus=40, batch_size=8, matryoshka_dims=[])
CLF = LogregParams(
    C=10.0,
    max_iter=200,
    max_train_papers=60,
    max_test_papers=None,
    batch_size=8,
    classifier_train_papers=None,
    classifier_C=None,
)


def test_texts_follow_the_mode() -> None:
    df = pd.DataFrame({"title": ["On sets"], "abstract": ["We count."]})
    assert papers_texts(df, "title_abstract") == ["On sets. We count."]
    assert papers_texts(df, "abstract") == ["We count."]


def test_fit_vectorizer_uses_the_params() -> None:
    corpus = ["alpha beta", "alpha gamma", "delta"]
    vectorizer = fit_vectorizer(
        corpus, TfidfParams(max_features=3, ngram_max=2, min_df=1, sublinear_tf=False)
    )
    assert len(vectorizer.vocabulary_) == 3
    assert "alpha" in vectorizer.vocabulary_
    assert set(fit_vectorizer(corpus, TfidfParams(100, 1, 2, True)).vocabulary_) == {"alpha"}


def papers(per_subject: int, seed: int) -> pd.DataFrame:
    rows = [parse_record(json.dumps(p), 20)[0] for p in make_papers(per_subject, seed)]
    return pd.DataFrame(rows)


def test_baseline_separates_distinct_vocabularies() -> None:
    train, test = papers(20, seed=0), papers(10, seed=1)
    results = tfidf_baseline(train, test, PARAMS, IR, CLF, "title_abstract", seed=0)
    ir_keys = {f"{m}@{k}" for m in ("precision", "recall", "accuracy") for k in (1, 5, 10)}
    assert set(results) == ir_keys | {"mrr@10", "ndcg@10", "map@100", "accuracy", "macro_f1"}
    # Each subject of the generated papers has its own words: TF-IDF finds them.
    assert results["precision@1"] == pytest.approx(1.0)
    assert results["accuracy"] == pytest.approx(1.0)
    assert results == tfidf_baseline(train, test, PARAMS, IR, CLF, "title_abstract", seed=0)


def test_main_smoke(tiny_project: Path) -> None:
    run_stages("prepare", "split", "tfidf_baseline")
    metrics = json.loads((tiny_project / "metrics" / "tfidf_baseline.json").read_text())
    for key in ("tfidf_precision@10", "tfidf_mrr@10", "tfidf_ndcg@10", "tfidf_map@100", "tfidf_accuracy"):
        assert key in metrics
    assert all(k.startswith("tfidf_") and math.isfinite(v) for k, v in metrics.items())
    assert metrics["tfidf_macro_f1"] > 0.5
