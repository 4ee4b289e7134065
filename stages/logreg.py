"""Logreg: classify papers by primary subject with logistic regression on their embeddings.

Reads   ``${paths.split_dir}/{train,test}.parquet``, ``${paths.embedder_dir}`` (the model the pipeline ships;
        ``finetuned_*`` in the metrics), ``meta.base_model`` (``untuned_*``) and
        ``${paths.embeddings_dir}/train.parquet``: train papers the adapter stage has embedded already, whose
        vectors (through the adapter) are used instead of encoding them again.
Params  ``logreg`` section, ``meta``.
Writes  ``metrics/logreg.json`` (accuracy and macro-F1 of the untuned and the fine-tuned embeddings),
        ``plots/logreg_per_class.csv`` (precision, recall, F1, support per subject, fine-tuned model),
        ``plots/logreg_confusion.csv`` (actual, predicted per test paper, fine-tuned model) and
        ``${paths.classifier_dir}`` (the fine-tuned model's classifier for the API: coef.npy, intercept.npy,
        classes.json; probabilities = softmax(x @ coef.T + intercept)).

Two measurements of the fine-tuned embeddings:

- ``untuned_*``, ``finetuned_*``: both models on the same ``logreg.max_train_papers`` train papers (the
  TF-IDF baseline's too), so the three compare at equal data;
- ``classifier_*``: the classifier the API serves, trained on up to ``logreg.classifier_train_papers`` papers,
  which the adapter stage has embedded already (its vectors through the adapter: no encoding), tested on the
  same test papers. The per-class and confusion plots are of this one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_fscore_support

from arxiv_embed.adapter import adapter_of, apply_adapter
from arxiv_embed.encode import encode_papers
from arxiv_embed.io import atomic_dir, read_parquet, read_split, write_csv, write_json
from arxiv_embed.metrics import classification_metrics, stratified_sample
from arxiv_embed.models import load_model
from arxiv_embed.params import LogregParams, run_stage_check
from arxiv_embed.storage import stage_storage
from arxiv_embed.text import TextMode


def fit_classifier(
    x: np.ndarray, y: pd.Series, params: LogregParams, seed: int, C: float | None = None
) -> LogisticRegression:
    """Logistic regression with ``params.C``, or ``C`` when given."""
    C = params.C if C is None else C
    return LogisticRegression(C=C, max_iter=params.max_iter, random_state=seed).fit(x, y)


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


def train_embeddings(
    model: object, papers: pd.DataFrame, cached: pd.DataFrame, mode: TextMode, batch_size: int, desc: str
) -> tuple[np.ndarray, int]:
    """Embeddings of ``papers`` by ``model``: from ``cached`` (id, embedding before the adapter) where it has the
    paper, through the model's adapter; the others encoded. Returns the vectors and how many were cached."""
    vectors = dict(zip(cached["id"], cached["embedding"], strict=True))
    hit = papers["id"].isin(vectors).to_numpy()
    out = np.empty((len(papers), 0), dtype=np.float32)
    if hit.any():
        found = np.stack([np.asarray(vectors[i], dtype=np.float32) for i in papers["id"][hit]])
        adapter = adapter_of(model)  # type: ignore[arg-type]
        found = apply_adapter(found, adapter) if adapter is not None else found
        out = np.empty((len(papers), found.shape[1]), dtype=np.float32)
        out[hit] = found
    if (~hit).any():
        missing = encode_papers(model, papers[~hit], mode, batch_size, desc)
        if out.shape[1] == 0:
            out = np.empty((len(papers), missing.shape[1]), dtype=np.float32)
        out[~hit] = missing
    return out, int(hit.sum())


@stage_storage("logreg")
def main() -> None:
    p = run_stage_check("logreg")
    params, paths, meta = p.logreg, p.paths, p.meta
    mode: TextMode = meta.text_mode
    train = stratified_sample(read_split(paths.split_dir, "train"), params.max_train_papers, meta.seed)
    test = stratified_sample(read_split(paths.split_dir, "test"), params.max_test_papers, meta.seed)
    metrics: dict[str, float] = {"train_papers": len(train), "test_papers": len(test)}
    cached = read_parquet(Path(paths.embeddings_dir) / "train.parquet")
    for name, location in (("untuned", meta.base_model), ("finetuned", paths.embedder_dir)):
        model = load_model(location, max_seq_length=meta.max_seq_length)
        if name == "finetuned":
            x_train, metrics["finetuned_train_cached"] = train_embeddings(
                model, train, cached, mode, params.batch_size, f"{name} train"
            )
        else:
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
    # The served classifier: as many train papers as the adapter stage embedded (and classifier_train_papers allows).
    if params.classifier_train_papers is not None and params.classifier_train_papers > len(train):
        more = stratified_sample(
            read_split(paths.split_dir, "train"), params.classifier_train_papers, meta.seed
        )
        more = more[more["id"].isin(set(cached["id"])) | more["id"].isin(set(train["id"]))]
        x_more, _ = train_embeddings(model, more, cached, mode, params.batch_size, "classifier train")
        classifier = fit_classifier(x_more, more["subject"], params, meta.seed, C=params.classifier_C)
        predicted = classifier.predict(x_test)
        train_count = len(more)
    else:
        train_count = len(train)
    metrics["classifier_train_papers"] = train_count
    metrics.update(
        {
            f"classifier_{k}": v
            for k, v in classification_metrics(list(test["subject"]), list(predicted)).items()
        }
    )
    write_csv(per_class_report(test["subject"], predicted), Path(paths.plots_dir) / "logreg_per_class.csv")
    write_csv(
        pd.DataFrame({"actual": test["subject"], "predicted": predicted}),
        Path(paths.plots_dir) / "logreg_confusion.csv",
    )
    with atomic_dir(paths.classifier_dir) as staging:
        save_classifier(classifier, staging)
    write_json(Path(paths.metrics_dir) / "logreg.json", metrics)
    print({k: round(v, 4) for k, v in metrics.items()})


if __name__ == "__main__":
    main()
