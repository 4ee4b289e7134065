"""TF-IDF baseline: the same retrieval protocol as ``ir_eval`` and the same classification task as ``logreg``.

Reads   ``${paths.split_dir}/{train,test}.parquet``.
Params  ``tfidf_baseline`` (vectoriser), ``ir_eval`` (protocol sizes), ``logreg`` (classifier), ``meta``.
Writes  ``metrics/tfidf_baseline.json``: ``tfidf_precision@10`` ... and ``tfidf_accuracy``, ``tfidf_macro_f1``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from arxiv_embed.io import read_split, read_split_sample, write_json
from arxiv_embed.metrics import classification_metrics, ir_metrics, ir_sample, stratified_sample
from arxiv_embed.params import IREvalParams, LogregParams, TfidfParams, run_stage_check
from arxiv_embed.storage import stage_storage
from arxiv_embed.text import TextMode, papers_texts


def fit_vectorizer(corpus: list[str], params: TfidfParams) -> TfidfVectorizer:
    vectorizer = TfidfVectorizer(
        max_features=params.max_features,
        ngram_range=(1, params.ngram_max),
        min_df=params.min_df,
        sublinear_tf=params.sublinear_tf,
        strip_accents="unicode",
        dtype=np.float32,
    )
    return vectorizer.fit(corpus)


def tfidf_baseline(
    train: pd.DataFrame,
    test: pd.DataFrame,
    params: TfidfParams,
    ir: IREvalParams,
    clf: LogregParams,
    mode: TextMode,
    seed: int,
) -> dict[str, float]:
    clf_train = stratified_sample(train, clf.max_train_papers, seed)
    vectorizer = fit_vectorizer(papers_texts(clf_train, mode), params)
    sample = ir_sample(test, ir.n_queries, ir.n_corpus, seed)
    scores = (
        vectorizer.transform(papers_texts(sample.queries, mode))
        @ vectorizer.transform(papers_texts(sample.corpus, mode)).T
    )
    results = ir_metrics(scores.toarray(), sample.queries["subject"], sample.corpus["subject"])
    model = LogisticRegression(C=clf.C, max_iter=clf.max_iter, random_state=seed)
    model.fit(vectorizer.transform(papers_texts(clf_train, mode)), clf_train["subject"])
    clf_test = stratified_sample(test, clf.max_test_papers, seed)
    predicted = model.predict(vectorizer.transform(papers_texts(clf_test, mode)))
    results.update(classification_metrics(list(clf_test["subject"]), list(predicted)))
    return results


@stage_storage("tfidf_baseline")
def main() -> None:
    p = run_stage_check("tfidf_baseline")
    paths = p.paths
    # Only the classifier's sample of the train split is read (the whole split may be millions of papers).
    train = read_split_sample(paths.split_dir, "train", p.logreg.max_train_papers, p.meta.seed)
    test = read_split(paths.split_dir, "test")
    results = tfidf_baseline(
        train, test, p.tfidf_baseline, p.ir_eval, p.logreg, p.meta.text_mode, p.meta.seed
    )
    write_json(Path(paths.metrics_dir) / "tfidf_baseline.json", {f"tfidf_{k}": v for k, v in results.items()})
    print({k: round(v, 4) for k, v in results.items()})


if __name__ == "__main__":
    main()
