"""Stage logreg: the per-class report, the saved classifier = scikit-learn's probabilities, and main() (slow)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pipeline_helpers import copy_project, run_stages
from sklearn.linear_model import LogisticRegression

from arxiv_embed.params import LogregParams
from stages.logreg import fit_classifier, per_class_report, save_classifier

PARAMS = LogregParams(
    C=1.0,
    max_iter=500,
    max_train_papers=None,
    max_test_papers=None,
    batch_size=8,
    classifier_train_papers=None,
    classifier_C=None,
)


def test_per_class_report() -> None:
    report = per_class_report(pd.Series(["a", "a", "b", "c"]), np.array(["a", "b", "b", "d"]))
    assert report.to_dict("list") == {
        "subject": ["a", "b", "c"],
        "precision": [1.0, 0.5, 0.0],
        "recall": [0.5, 1.0, 0.0],
        "f1": pytest.approx([2 / 3, 2 / 3, 0.0]),
        "support": [2, 1, 1],
    }


def softmax_probabilities(folder: Path, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """What the API computes from the saved files: softmax(x @ coef.T + intercept)."""
    coef, intercept = np.load(folder / "coef.npy"), np.load(folder / "intercept.npy")
    classes = json.loads((folder / "classes.json").read_text())
    assert coef.dtype == np.float32 and coef.shape == (len(classes), x.shape[1])
    assert intercept.shape == (len(classes),)
    logits = x @ coef.T + intercept
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True), classes


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_saved_classifier_gives_sklearn_probabilities(n_classes: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = [f"s{i}" for i in range(n_classes)]
    y = pd.Series(rng.choice(labels, size=120))
    x = rng.normal(size=(120, 8)) + np.eye(8)[[labels.index(v) for v in y]] * 2
    model = fit_classifier(x, y, PARAMS, seed=0)
    assert isinstance(model, LogisticRegression)
    save_classifier(model, tmp_path / "clf")
    probabilities, classes = softmax_probabilities(tmp_path / "clf", x.astype(np.float32))
    assert classes == labels
    np.testing.assert_allclose(probabilities, model.predict_proba(x), atol=1e-5)


def test_the_served_classifier_can_have_its_own_regularisation() -> None:
    rng = np.random.default_rng(0)
    y = pd.Series(rng.choice(["a", "b"], size=100))
    x = rng.normal(size=(100, 4)) + (y == "a").to_numpy()[:, None]
    default, strong = fit_classifier(x, y, PARAMS, seed=0), fit_classifier(x, y, PARAMS, seed=0, C=0.01)
    assert (default.C, strong.C) == (PARAMS.C, 0.01)
    assert np.abs(strong.coef_).sum() < 0.5 * np.abs(default.coef_).sum()


@pytest.mark.slow
def test_main_smoke(trained_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(copy_project(trained_project, tmp_path / "project"))
    run_stages("logreg")
    metrics = json.loads(Path("metrics/logreg.json").read_text())
    assert set(metrics) == {
        "train_papers",
        "test_papers",
        "untuned_accuracy",
        "untuned_macro_f1",
        "finetuned_accuracy",
        "finetuned_macro_f1",
        "finetuned_train_cached",
        "classifier_train_papers",
        "classifier_accuracy",
        "classifier_macro_f1",
    }
    assert all(math.isfinite(v) for v in metrics.values())
    # The tiny project's adapter embedded all 60 train papers: none is encoded again for the fine-tuned model.
    assert metrics["finetuned_train_cached"] == metrics["train_papers"] == 60
    test = pd.read_parquet("data/split/test.parquet")
    assert metrics["test_papers"] == len(test)
    confusion = pd.read_csv("plots/logreg_confusion.csv")
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == len(test)
    per_class = pd.read_csv("plots/logreg_per_class.csv")
    assert per_class["support"].sum() == len(test)
    classes = json.loads(Path("models/classifier/classes.json").read_text())
    assert classes == sorted(set(pd.read_parquet("data/split/train.parquet")["subject"]))
    assert np.load("models/classifier/coef.npy").shape == (len(classes), 384)
