"""Logreg: classify papers by primary subject with logistic regression on their embeddings.

Reads   ``${paths.split_dir}/{train,test}.parquet``, ``${paths.model_dir}``, ``meta.base_model``.
Params  ``logreg`` section, ``meta``.
Writes  ``metrics/logreg.json`` (accuracy and macro-F1 of the untuned and the fine-tuned embeddings),
        ``plots/logreg_per_class.csv`` (precision, recall, F1, support per subject, fine-tuned model),
        ``plots/logreg_confusion.csv`` (actual, predicted per test paper, fine-tuned model) and
        ``${paths.classifier_dir}`` (the fine-tuned model's classifier for the API: coef.npy, intercept.npy,
        classes.json; probabilities = softmax(x @ coef.T + intercept)).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_fscore_support

from arxiv_embed.encode import encode_papers
from arxiv_embed.io import read_split, write_csv, write_json
from arxiv_embed.metrics import classification_metrics, stratified_sample
from arxiv_embed.models import load_model
from arxiv_embed.params import LogregParams, load_common, load_section
from arxiv_embed.storage import stage_storage
from arxiv_embed.text import TextMode


def fit_classifier(x: np.ndarray, y: pd.Series, params: LogregParams, seed: int) -> LogisticRegression:
    return LogisticRegression(C=params.C, max_iter=params.max_iter, random_state=seed).fit(x, y)


def per_class_report(y_true: pd.Series, y_pred: np.ndarray) -> pd.DataFrame:
    labels = sorted(set(y_true))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return pd.DataFrame({"subject": labels, "precision": p, "recall": r, "f1": f, "support": s})


def save_classifier(model: LogisticRegression, out_dir: str | Path) -> None:
    """The classifier as plain arrays, so the API needs neither pickle nor scikit-learn to use it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    coef, intercept = model.coef_, model.intercept_
    if len(model.classes_) == 2:  # scikit-learn keeps one row (class 1): sigmoid(z) = softmax([0, z])[1]
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    np.save(out / "coef.npy", coef.astype(np.float32))
    np.save(out / "intercept.npy", intercept.astype(np.float32))
    (out / "classes.json").write_text(json.dumps([str(c) for c in model.classes_]) + "\n", encoding="utf-8")


@stage_storage("logreg")
def main() -> None:
    params = load_section(LogregParams, "logreg")
    paths, meta = load_common()
    mode: TextMode = meta.text_mode
    train = stratified_sample(read_split(paths.split_dir, "train"), params.max_train_papers, meta.seed)
    test = stratified_sample(read_split(paths.split_dir, "test"), params.max_test_papers, meta.seed)
    metrics: dict[str, float] = {"train_papers": len(train), "test_papers": len(test)}
    for name, location in (("untuned", meta.base_model), ("finetuned", paths.model_dir)):
        model = load_model(location, max_seq_length=meta.max_seq_length)
        x_train = encode_papers(model, train, mode, params.batch_size, f"{name} train")
        x_test = encode_papers(model, test, mode, params.batch_size, f"{name} test")
        classifier = fit_classifier(x_train, train["subject"], params, meta.seed)
        predicted = classifier.predict(x_test)
        metrics.update(
            {
                f"{name}_{k}": v
                for k, v in classification_metrics(list(test["subject"]), list(predicted)).items()
            }
        )
    # The last model is the fine-tuned one: its report, confusion and classifier are kept.
    write_csv(per_class_report(test["subject"], predicted), Path(paths.plots_dir) / "logreg_per_class.csv")
    write_csv(
        pd.DataFrame({"actual": test["subject"], "predicted": predicted}),
        Path(paths.plots_dir) / "logreg_confusion.csv",
    )
    save_classifier(classifier, paths.classifier_dir)
    write_json(Path(paths.metrics_dir) / "logreg.json", metrics)
    print({k: round(v, 4) for k, v in metrics.items()})


if __name__ == "__main__":
    main()
