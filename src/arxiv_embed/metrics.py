"""Retrieval and classification metrics shared by the evaluation stages.

Retrieval follows Sentence Transformers' ``InformationRetrievalEvaluator`` definitions (a test checks that both
give the same numbers), computed from a query x corpus score matrix so that embeddings and TF-IDF are measured
with one protocol: each query's relevant documents are the corpus papers of its primary subject.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

PRECISION_RECALL_AT = (1, 5, 10)
ACCURACY_AT = (1, 5, 10)
MRR_AT = (10,)
NDCG_AT = (10,)
MAP_AT = (100,)


@dataclass(frozen=True)
class IRSample:
    """Queries and corpus drawn from one split; relevant = same ``subject``."""

    queries: pd.DataFrame
    corpus: pd.DataFrame


def ir_sample(papers: pd.DataFrame, n_queries: int, n_corpus: int, seed: int) -> IRSample:
    """Draw ``n_queries + n_corpus`` papers (all if fewer), the first ``n_queries`` of them as queries.

    Queries whose subject has no paper in the corpus are dropped, as the evaluator drops queries without
    relevant documents.
    """
    if n_queries < 1 or n_corpus < 1:
        raise ValueError("n_queries and n_corpus must be >= 1")
    ordered = papers.sort_values("id", kind="stable").reset_index(drop=True)
    n = min(len(ordered), n_queries + n_corpus)
    chosen = ordered.iloc[np.random.default_rng(seed).permutation(len(ordered))[:n]].reset_index(drop=True)
    n_q = max(1, round(n * n_queries / (n_queries + n_corpus))) if n < n_queries + n_corpus else n_queries
    queries, corpus = chosen.iloc[:n_q], chosen.iloc[n_q:]
    queries = queries[queries["subject"].isin(set(corpus["subject"]))]
    if queries.empty or corpus.empty:
        raise ValueError(
            f"cannot build an IR sample from {len(papers)} papers: no query has a relevant document"
        )
    return IRSample(queries.reset_index(drop=True), corpus.reset_index(drop=True))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores of each row, best first (ties broken by lower index)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    return np.take_along_axis(part, order, axis=1)


def ir_per_query(
    scores: np.ndarray, query_labels: Sequence[str], corpus_labels: Sequence[str]
) -> dict[str, np.ndarray]:
    """Per-query retrieval metrics (arrays of length n_queries) keyed like ``precision@10``."""
    scores = np.asarray(scores, dtype=np.float32)
    q = np.asarray(query_labels)
    c = np.asarray(corpus_labels)
    if scores.shape != (len(q), len(c)):
        raise ValueError(f"scores shape {scores.shape} does not match {len(q)} queries x {len(c)} corpus")
    max_k = max((*PRECISION_RECALL_AT, *ACCURACY_AT, *MRR_AT, *NDCG_AT, *MAP_AT))
    top = top_k(scores, max_k)
    hits = (c[top] == q[:, None]).astype(np.float64)  # n_q x max_k
    n_relevant = (c[None, :] == q[:, None]).sum(axis=1).astype(np.float64)
    if (n_relevant == 0).any():
        raise ValueError("every query needs at least one relevant corpus document")
    ranks = np.arange(1, hits.shape[1] + 1, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for k in ACCURACY_AT:
        out[f"accuracy@{k}"] = (hits[:, :k].sum(axis=1) > 0).astype(np.float64)
    for k in PRECISION_RECALL_AT:
        out[f"precision@{k}"] = hits[:, :k].sum(axis=1) / k
        out[f"recall@{k}"] = hits[:, :k].sum(axis=1) / n_relevant
    for k in MRR_AT:
        first = np.where(hits[:, :k].any(axis=1), hits[:, :k].argmax(axis=1) + 1, np.inf)
        out[f"mrr@{k}"] = 1.0 / first
    for k in NDCG_AT:
        discounts = 1.0 / np.log2(ranks[:k] + 1)
        dcg = (hits[:, :k] * discounts).sum(axis=1)
        ideal = np.array([discounts[: int(min(r, k))].sum() for r in n_relevant])
        out[f"ndcg@{k}"] = dcg / ideal
    for k in MAP_AT:
        h = hits[:, :k]
        precision_at_hit = np.cumsum(h, axis=1) / ranks[: h.shape[1]]
        out[f"map@{k}"] = (precision_at_hit * h).sum(axis=1) / np.minimum(n_relevant, k)
    return out


def ir_metrics(
    scores: np.ndarray, query_labels: Sequence[str], corpus_labels: Sequence[str]
) -> dict[str, float]:
    """Mean retrieval metrics over the queries: precision/recall/accuracy@k, MRR@10, nDCG@10, MAP@100."""
    return {
        name: float(values.mean())
        for name, values in ir_per_query(scores, query_labels, corpus_labels).items()
    }


def per_subject(values: np.ndarray, query_labels: Sequence[str]) -> pd.Series:
    """Mean of a per-query metric for each query subject, sorted by subject."""
    return pd.Series(np.asarray(values), index=np.asarray(query_labels)).groupby(level=0).mean().sort_index()


def cosine_scores(query_emb: np.ndarray, corpus_emb: np.ndarray) -> np.ndarray:
    """Cosine similarity matrix (rows L2-normalised here, so unnormalised inputs are fine)."""

    def norm(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)

    return norm(query_emb) @ norm(corpus_emb).T


def stratified_sample(papers: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """At most ``n`` papers (all when ``n`` is None), keeping each subject's share; sorted by id."""
    papers = papers.sort_values("id", kind="stable").reset_index(drop=True)
    if n is None or n >= len(papers):
        return papers
    keep = pd.Series(np.random.default_rng(seed).random(len(papers)), index=papers.index)
    rank = keep.groupby(papers["subject"]).rank(pct=True, method="first")
    return papers[rank <= n / len(papers)].reset_index(drop=True)


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over the classes present in ``y_true``."""
    from sklearn.metrics import accuracy_score, f1_score

    labels = sorted(set(y_true))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
    }
