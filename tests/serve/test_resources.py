"""Loading and using the search index and the classifier, on toy vectors with exact answers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from serve.resources import (
    Classifier,
    ResourceError,
    absent_reason,
    index_absent,
    load_classifier,
    load_index,
)
from serve.search import search_rows
from stages.faiss_build import paper_meta


def write_index(folder: Path, vectors: np.ndarray, meta: pd.DataFrame) -> Path:
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors.astype(np.float32))
    faiss.write_index(index, str(folder / "index.faiss"))
    meta.to_parquet(folder / "meta.parquet")
    return folder


def write_classifier(folder: Path, coef: np.ndarray, intercept: np.ndarray, classes: object) -> Path:
    np.save(folder / "coef.npy", coef)
    np.save(folder / "intercept.npy", intercept)
    (folder / "classes.json").write_text(json.dumps(classes))
    return folder


META = pd.DataFrame({"id": ["a", "b", "c"], "title": ["A", "B", "C"], "subject": ["x", "y", "x"]})
VECTORS = np.array([[1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32)


def test_softmax_of_the_linear_scores() -> None:
    clf = Classifier(np.eye(2, dtype=np.float32), np.zeros(2, dtype=np.float32), ["x", "y"])
    probs = clf.predict_proba(np.array([[math.log(3), 0.0]]))
    np.testing.assert_allclose(probs, [[0.75, 0.25]], rtol=1e-6)
    shifted = Classifier(
        np.eye(2, dtype=np.float32), np.array([0, math.log(3)], dtype=np.float32), ["x", "y"]
    )
    np.testing.assert_allclose(shifted.predict_proba(np.array([[math.log(3), 0.0]])), [[0.5, 0.5]], rtol=1e-6)


def test_search_ranks_by_inner_product(tmp_path: Path) -> None:
    index = load_index(write_index(tmp_path, VECTORS, META), dimensions=2)
    assert index.size == 3
    found = search_rows(index, np.array([1.0, 0.0]), k=2, mask=None)
    hits = index.records(found.rows)
    assert [(rank, h["id"], h["title"], h["subject"]) for rank, h in enumerate(hits, start=1)] == [
        (1, "a", "A", "x"),
        (2, "c", "C", "x"),
    ]
    assert list(found.scores) == pytest.approx([1.0, 0.6])
    assert len(search_rows(index, np.array([0.0, 1.0]), k=100, mask=None).rows) == 3


def test_index_must_match_model_and_metadata(tmp_path: Path) -> None:
    write_index(tmp_path, VECTORS, META)
    with pytest.raises(
        ResourceError, match=r"index dimension 2 is not one the model was evaluated at \(384, 128"
    ):
        load_index(tmp_path, dimensions=[384, 128])
    assert load_index(tmp_path, dimensions=[384, 2]).index.d == 2  # a Matryoshka index of the model
    META.head(2).to_parquet(tmp_path / "meta.parquet")
    with pytest.raises(ResourceError, match="3 vectors but 2 metadata rows"):
        load_index(tmp_path, dimensions=2)
    META.drop(columns="title").to_parquet(tmp_path / "meta.parquet")
    with pytest.raises(ResourceError, match="missing column"):
        load_index(tmp_path, dimensions=2)


def test_a_shorter_index_gets_queries_cut_to_its_size(tmp_path: Path) -> None:
    index = load_index(write_index(tmp_path, VECTORS, META), dimensions=[4, 2])
    query = np.array([1.0, 0.0, 0.5, 0.5])  # cut to [1, 0]: as the 2-d search above
    found = search_rows(index, query / np.linalg.norm(query), k=2, mask=None)
    assert [h["id"] for h in index.records(found.rows)] == ["a", "c"]


def test_classifier_shapes_must_agree(tmp_path: Path) -> None:
    ok = load_classifier(write_classifier(tmp_path, np.eye(2), np.zeros(2), ["x", "y"]), dimension=2)
    assert ok.classes == ["x", "y"] and ok.coef.dtype == np.float32
    write_classifier(tmp_path, np.eye(2), np.zeros(2), ["x", "y", "z"])
    with pytest.raises(ResourceError, match="do not fit 3 classes x dimension 2"):
        load_classifier(tmp_path, dimension=2)
    write_classifier(tmp_path, np.eye(2), np.zeros(2), {"x": 0})
    with pytest.raises(ResourceError, match="list of subject strings"):
        load_classifier(tmp_path, dimension=2)


def test_absent_reason_names_what_is_missing(tmp_path: Path) -> None:
    assert absent_reason(None, ("a",)) == "not configured"
    assert absent_reason(tmp_path, ("a", "b")) == f"{tmp_path}: missing a, b"
    (tmp_path / "a").write_text("")
    (tmp_path / "b").write_text("")
    assert absent_reason(tmp_path, ("a", "b")) is None


def test_index_absent_wants_the_index_and_either_metadata_file(tmp_path: Path) -> None:
    assert index_absent(None) == "not configured"
    assert index_absent(tmp_path) == f"{tmp_path}: missing index.faiss"
    (tmp_path / "index.faiss").write_text("")
    assert index_absent(tmp_path) == f"{tmp_path}: missing meta.arrow (or meta.parquet)"
    (tmp_path / "meta.parquet").write_text("")
    assert index_absent(tmp_path) is None


@pytest.mark.parametrize("meta_file", ["meta.arrow", "meta.parquet"])
def test_meta_arrow_is_memory_mapped_and_an_older_parquet_read(meta_file: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 2000
    letters = np.array(list("abcdefghij "))
    abstracts = ["".join(rng.choice(letters, 1000)) for _ in range(n)]  # 2 MB of text
    papers = pd.DataFrame(
        {"id": [f"2101.{i:05d}" for i in range(n)], "title": ["T"] * n, "subject": ["cs.LG"] * n}
    ).assign(abstract=abstracts)
    vectors = rng.standard_normal((n, 2)).astype(np.float32)
    write_index(tmp_path, vectors, papers.head(0))  # the index; its metadata comes next
    (tmp_path / "meta.parquet").unlink()
    if (
        meta_file == "meta.arrow"
    ):  # as faiss_build writes it, in record batches of 500 rows as a large file has
        feather.write_feather(
            paper_meta(papers), tmp_path / meta_file, compression="uncompressed", chunksize=500
        )
    else:
        pq.write_table(paper_meta(papers), tmp_path / meta_file)
    before = pa.total_allocated_bytes()
    loaded = load_index(tmp_path, dimensions=2)
    held = pa.total_allocated_bytes() - before  # Arrow's memory pool: a memory-mapped file is not in it
    if meta_file == "meta.arrow":
        assert held < 200_000, held  # ids, subjects and dates for the filters, not the 2 MB of abstracts
    else:
        assert held > 2_000_000, held  # what the mapping saves: parquet is decoded into memory
    default = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(default)  # counts what records() allocates, peak included
    pa.set_memory_pool(pool)
    try:
        records = loaded.records([5, 1999])
    finally:
        pa.set_memory_pool(default)
    assert [r["abstract"] for r in records] == [abstracts[5], abstracts[1999]]
    assert pool.max_memory() < 100_000  # two rows, not the whole column (Table.take joins its chunks first)
