"""arxiv_embed.metrics: exact values on a toy corpus, and the same numbers as Sentence Transformers' evaluator."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from arxiv_embed.metrics import (
    classification_metrics,
    cosine_scores,
    ir_metrics,
    ir_per_query,
    ir_sample,
    per_subject,
    stratified_sample,
    top_k,
)

# 12 corpus papers; query 0 (subject a) ranks them 0..11, query 1 (subject b) ranks them 11..0.
CORPUS = ["a", "b", "a", "c", "c", "a", "b", "c", "c", "c", "c", "c"]
QUERIES = ["a", "b"]
SCORES = np.array([[1 - i / 100 for i in range(12)], [i / 100 for i in range(12)]])
# Query 0: hits at ranks 1, 3, 6 of 3 relevant; query 1: hits at ranks 6 and 11 of 2 relevant.
EXPECTED_PER_QUERY = {
    "accuracy@1": [1, 0],
    "accuracy@5": [1, 0],
    "accuracy@10": [1, 1],
    "precision@1": [1, 0],
    "precision@5": [2 / 5, 0],
    "precision@10": [3 / 10, 1 / 10],
    "recall@1": [1 / 3, 0],
    "recall@5": [2 / 3, 0],
    "recall@10": [1, 1 / 2],
    "mrr@10": [1, 1 / 6],
    "ndcg@10": [
        (1 + 1 / math.log2(4) + 1 / math.log2(7)) / (1 + 1 / math.log2(3) + 1 / math.log2(4)),
        (1 / math.log2(7)) / (1 + 1 / math.log2(3)),
    ],
    "map@100": [(1 + 2 / 3 + 3 / 6) / 3, (1 / 6 + 2 / 11) / 2],
}


def test_ir_per_query_exact() -> None:
    per_query = ir_per_query(SCORES, QUERIES, CORPUS)
    assert set(per_query) == set(EXPECTED_PER_QUERY)
    for name, expected in EXPECTED_PER_QUERY.items():
        np.testing.assert_allclose(per_query[name], expected, rtol=1e-12, err_msg=name)


def test_ir_metrics_are_query_means() -> None:
    metrics = ir_metrics(SCORES, QUERIES, CORPUS)
    assert metrics == pytest.approx({k: sum(v) / 2 for k, v in EXPECTED_PER_QUERY.items()}, rel=1e-12)
    assert all(isinstance(v, float) for v in metrics.values())


def test_ir_per_query_rejects_shape_mismatch_and_queries_without_relevant_docs() -> None:
    with pytest.raises(ValueError, match="does not match 2 queries x 11 corpus"):
        ir_per_query(SCORES, QUERIES, CORPUS[:11])
    with pytest.raises(ValueError, match="at least one relevant"):
        ir_per_query(SCORES, ["a", "z"], CORPUS)


def test_top_k_breaks_ties_by_lower_index() -> None:
    scores = np.array([[0.5, 0.9, 0.5, 0.9, 0.1], [0.0, 0.0, 0.0, 0.0, 0.0]])
    assert top_k(scores, 3).tolist() == [[1, 3, 0], [0, 1, 2]]
    assert top_k(scores, 10).tolist() == [[1, 3, 0, 2, 4], [0, 1, 2, 3, 4]]  # k capped at the corpus size


def test_cosine_scores_normalise_rows() -> None:
    scores = cosine_scores(np.array([[3.0, 0.0]]), np.array([[0.0, 2.0], [1.0, 1.0], [5.0, 0.0]]))
    np.testing.assert_allclose(scores, [[0.0, 2**-0.5, 1.0]], rtol=1e-6)


def test_per_subject_means() -> None:
    table = per_subject(np.array([1.0, 0.0, 0.5]), ["b", "a", "b"])
    assert table.to_dict() == {"a": 0.0, "b": 0.75}


# --- the same numbers as sentence_transformers' InformationRetrievalEvaluator ---------------------------------


class FakeEncoder:
    """Stands in for a SentenceTransformer in the evaluator: a fixed vector per text, cosine similarity."""

    similarity_fn_name = "cosine"

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        from sentence_transformers.util import cos_sim

        self.vectors = vectors
        self.similarity = cos_sim
        self.model_card_data = self  # the evaluator stores its metrics there

    def set_evaluation_metrics(self, *args: object, **kwargs: object) -> None:
        pass

    def encode(self, sentences: list[str], **kwargs: object) -> object:
        import torch

        return torch.tensor(np.stack([self.vectors[s] for s in sentences]), dtype=torch.float32)

    encode_query = encode
    encode_document = encode


def evaluator_metrics(vectors: dict[str, np.ndarray], queries: dict, corpus: dict) -> dict[str, float]:
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    by_subject: dict[str, set[str]] = {}
    for cid, subject in corpus.items():
        by_subject.setdefault(subject, set()).add(cid)
    evaluator = InformationRetrievalEvaluator(
        queries={qid: qid for qid in queries},  # the text of each query/doc is its id
        corpus={cid: cid for cid in corpus},
        relevant_docs={qid: by_subject[subject] for qid, subject in queries.items()},
        accuracy_at_k=[1, 5, 10],
        precision_recall_at_k=[1, 5, 10],
        mrr_at_k=[10],
        ndcg_at_k=[10],
        map_at_k=[100],
        show_progress_bar=False,
        write_csv=False,
    )
    results = evaluator(FakeEncoder(vectors))
    return {k.removeprefix("cosine_"): v for k, v in results.items() if k.startswith("cosine_")}


def our_metrics(vectors: dict[str, np.ndarray], queries: dict, corpus: dict) -> dict[str, float]:
    q = np.stack([vectors[i] for i in queries])
    c = np.stack([vectors[i] for i in corpus])
    return ir_metrics(cosine_scores(q, c), list(queries.values()), list(corpus.values()))


def toy_ir(n_subjects: int, n_queries: int, n_corpus: int, seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    subjects = [f"s{i}" for i in range(n_subjects)]
    # Corpus ids sort in corpus order, so both implementations break score ties the same way.
    corpus = {f"c{i:03d}": subjects[i % n_subjects] for i in range(n_corpus)}
    queries = {f"q{i:03d}": str(rng.choice(subjects)) for i in range(n_queries)}
    return queries, corpus


def test_equals_sentence_transformers_evaluator_one_hot() -> None:
    queries, corpus = toy_ir(n_subjects=4, n_queries=9, n_corpus=30, seed=0)
    # One-hot of the subject, but one corpus paper in three is embedded as the next subject: ranks with ties.
    eye = np.eye(4)
    vectors = {qid: eye[int(s[1:])] for qid, s in queries.items()}
    for i, (cid, s) in enumerate(corpus.items()):
        vectors[cid] = eye[(int(s[1:]) + (i % 3 == 0)) % 4]
    ours = our_metrics(vectors, queries, corpus)
    theirs = evaluator_metrics(vectors, queries, corpus)
    assert set(ours) == set(theirs)
    assert ours == pytest.approx(theirs, abs=1e-9)
    assert 0 < ours["precision@10"] < 1  # a toy where the metrics are not trivially 0 or 1


def test_equals_sentence_transformers_evaluator_random_vectors() -> None:
    queries, corpus = toy_ir(n_subjects=5, n_queries=20, n_corpus=120, seed=1)
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(5, 16))
    vectors = {
        i: centres[int(s[1:])] + rng.normal(scale=1.5, size=16) for i, s in {**queries, **corpus}.items()
    }
    ours = our_metrics(vectors, queries, corpus)
    theirs = evaluator_metrics(vectors, queries, corpus)
    assert ours == pytest.approx(theirs, abs=1e-6)


# --- samples ---------------------------------------------------------------------------------------------------


def papers(counts: dict[str, int]) -> pd.DataFrame:
    subjects = [s for s, n in counts.items() for _ in range(n)]
    return pd.DataFrame({"id": [f"p{i:04d}" for i in range(len(subjects))], "subject": subjects})


def test_ir_sample_sizes_and_disjoint() -> None:
    df = papers({"a": 40, "b": 40, "c": 20})
    sample = ir_sample(df, n_queries=10, n_corpus=50, seed=0)
    assert len(sample.corpus) == 50
    assert len(sample.queries) == 10  # every subject has corpus papers here, so no query is dropped
    assert not set(sample.queries["id"]) & set(sample.corpus["id"])
    assert set(sample.queries["subject"]) <= set(sample.corpus["subject"])


def test_ir_sample_is_seeded_and_order_independent() -> None:
    df = papers({"a": 40, "b": 40, "c": 20})
    one = ir_sample(df, 10, 50, seed=3)
    shuffled = ir_sample(df.sample(frac=1, random_state=9), 10, 50, seed=3)
    pd.testing.assert_frame_equal(one.queries, shuffled.queries)
    pd.testing.assert_frame_equal(one.corpus, shuffled.corpus)
    other = ir_sample(df, 10, 50, seed=4)
    assert set(other.corpus["id"]) != set(one.corpus["id"])


def test_ir_sample_with_fewer_papers_keeps_the_ratio() -> None:
    df = papers({"a": 15, "b": 15})
    sample = ir_sample(df, n_queries=100, n_corpus=400, seed=0)  # 30 papers: 6 queries, 24 corpus
    assert (len(sample.queries), len(sample.corpus)) == (6, 24)


def test_ir_sample_drops_queries_without_relevant_docs() -> None:
    df = papers({"a": 30, "lonely": 1})
    for seed in range(20):  # whichever side "lonely" lands on, it never is a query
        sample = ir_sample(df, n_queries=5, n_corpus=26, seed=seed)
        assert "lonely" not in set(sample.queries["subject"])
    with pytest.raises(ValueError, match="no query has a relevant document"):
        ir_sample(papers({"a": 1, "b": 1}), n_queries=1, n_corpus=1, seed=0)
    with pytest.raises(ValueError, match=">= 1"):
        ir_sample(df, n_queries=0, n_corpus=5, seed=0)


def test_stratified_sample_keeps_shares() -> None:
    df = papers({"a": 60, "b": 40}).sample(frac=1, random_state=1)
    sample = stratified_sample(df, 50, seed=0)
    assert sample["subject"].value_counts().to_dict() == {"a": 30, "b": 20}
    assert sample["id"].is_monotonic_increasing
    pd.testing.assert_frame_equal(sample, stratified_sample(df, 50, seed=0))
    assert set(stratified_sample(df, 50, seed=1)["id"]) != set(sample["id"])


def test_stratified_sample_all_when_n_is_none_or_large() -> None:
    df = papers({"a": 6, "b": 4}).iloc[::-1]
    assert stratified_sample(df, None, seed=0)["id"].tolist() == sorted(df["id"])
    assert len(stratified_sample(df, 10, seed=0)) == 10


def test_classification_metrics() -> None:
    metrics = classification_metrics(["a", "a", "b", "c"], ["a", "b", "b", "d"])
    # F1: a = 2/3 (p 1, r 1/2), b = 2/3 (p 1/2, r 1), c = 0; "d" is not a true class and is not averaged.
    assert metrics == pytest.approx({"accuracy": 0.5, "macro_f1": 4 / 9})
