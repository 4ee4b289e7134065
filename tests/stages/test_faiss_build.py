"""Stage faiss_build: index types, recall, and main() on a tiny project with the bundled MiniLM as ONNX."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pyarrow.feather as feather
import pytest
import yaml
from pipeline_helpers import run_stages

from arxiv_embed.models import MINILM, resolve_model
from arxiv_embed.onnx import OnnxEncoder
from serve.resources import load_index
from stages.faiss_build import (
    INDEX_FILE,
    META_FILE,
    META_SCHEMA,
    FaissBuildParams,
    build_index,
    new_index,
    paper_meta,
    recall_at_k,
    search_metrics,
    train_index,
    write_meta,
)

pytest_plugins = ["onnx_fixtures"]

PARAMS = FaissBuildParams(
    encoder="onnx",
    model_file="model_int8.onnx",
    index="flat",
    dimension=None,
    max_papers=None,
    batch_size=16,
    torch_batch_size=16,
    threads=None,
    ivf_nlist=8,
    ivf_nprobe=8,
    pq_m=8,
    pq_bits=8,
    refine_k_factor=10,
    hnsw_m=16,
    hnsw_ef_construction=64,
    hnsw_ef_search=64,
    n_recall_queries=20,
)


def unit_vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_recall_at_k() -> None:
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 2, 1], [5, 6, 0, 9]])
    assert recall_at_k(found, exact, k=4) == pytest.approx((1.0 + 0.5) / 2)
    assert recall_at_k(found, exact, k=1) == pytest.approx(0.5)


def test_flat_index_is_exact_inner_product() -> None:
    vectors = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
    index = build_index(vectors, PARAMS)
    scores, ids = index.search(np.array([[0.0, 1.0]], dtype=np.float32), 3)
    np.testing.assert_array_equal(ids, [[2, 1, 0]])
    np.testing.assert_allclose(scores, [[1.0, 0.8, 0.0]], atol=1e-6)


@pytest.mark.parametrize(
    ("kind", "min_recall", "code_bytes"),
    # All 8 clusters probed / a wide beam: (near) exact; SQ8 and PQ lose what their codes round off. ivf_pq_sq8:
    # 4-bit PQ finds 10 x 10 candidates, SQ8 ranks them, so it recalls about what SQ8 does, not what PQ does.
    [
        ("ivf", 0.95, 64),
        ("ivf_sq8", 0.9, 16),
        ("ivf_pq", 0.3, 8),
        ("ivf_pq_sq8", 0.9, 4),
        ("hnsw", 0.95, 64),
        ("hnsw_sq8", 0.9, 16),
    ],
)
def test_approximate_indexes_recall_and_keep_search_settings(
    kind: str, min_recall: float, code_bytes: int, tmp_path: Path
) -> None:
    vectors = unit_vectors(2000)
    params = dataclasses.replace(PARAMS, index=kind)
    index = build_index(vectors, params)
    assert index.ntotal == 2000
    metrics = search_metrics(index, vectors, unit_vectors(50, seed=1))
    assert metrics["recall@10"] >= min_recall
    assert metrics["recall@10"] < 1.0 or kind in ("ivf", "hnsw")
    faiss.write_index(index, str(tmp_path / "index.faiss"))
    loaded = faiss.read_index(str(tmp_path / "index.faiss"))
    if kind.startswith("ivf"):
        assert faiss.extract_index_ivf(loaded).nprobe == 8
        # 16 float32 dimensions: 64 bytes a vector flat, 16 as SQ8, pq_m = 8 as PQ8x8 (8 x 4 bits fast-scan).
        assert faiss.extract_index_ivf(loaded).code_size == code_bytes
        if kind == "ivf_pq_sq8":  # the re-ranking codes and how many candidates they rank survive the file
            assert loaded.k_factor == PARAMS.refine_k_factor
            assert faiss.downcast_index(loaded.refine_index).code_size == 16
    else:
        hnsw = faiss.downcast_index(loaded)
        assert hnsw.hnsw.efSearch == 64
        assert faiss.downcast_index(hnsw.storage).code_size == code_bytes


def test_ivf_with_one_probe_misses_neighbours() -> None:
    vectors = unit_vectors(2000)
    index = build_index(vectors, dataclasses.replace(PARAMS, index="ivf", ivf_nlist=32, ivf_nprobe=1))
    recall = search_metrics(index, vectors, unit_vectors(50, seed=1))["recall@10"]
    assert 0.1 < recall < 0.9


def test_flat_index_reports_no_recall() -> None:
    vectors = unit_vectors(100)
    assert "recall@10" not in search_metrics(build_index(vectors, PARAMS), vectors, vectors[:5])


@pytest.mark.parametrize("kind", ["ivf", "ivf_sq8", "ivf_pq", "ivf_pq_sq8"])
def test_ivf_needs_enough_vectors(kind: str) -> None:
    with pytest.raises(ValueError, match="cannot train 8 clusters"):
        build_index(unit_vectors(5), dataclasses.replace(PARAMS, index=kind))


@pytest.mark.parametrize("kind", ["ivf_pq", "ivf_pq_sq8"])
def test_pq_m_must_divide_the_dimension(kind: str) -> None:
    with pytest.raises(ValueError, match="pq_m = 5 does not divide the dimension 16"):
        build_index(unit_vectors(100), dataclasses.replace(PARAMS, index=kind, pq_m=5))


def test_refined_pq_beats_pq_alone_at_the_same_candidates() -> None:
    vectors, queries = unit_vectors(3000), unit_vectors(50, seed=1)
    refined = build_index(vectors, dataclasses.replace(PARAMS, index="ivf_pq_sq8"))
    alone = search_metrics(refined.base_index, vectors, queries)["recall@10"]  # the fast-scan PQ codes only
    assert search_metrics(refined, vectors, queries)["recall@10"] > alone + 0.3


def test_an_untrained_index_learns_from_a_sample_and_adds_the_rest() -> None:
    vectors = unit_vectors(3000)
    params = dataclasses.replace(PARAMS, index="ivf_sq8")
    index = new_index(16, params)
    train_index(index, vectors[:500], params)
    for start in range(0, 3000, 1000):
        index.add(vectors[start : start + 1000])
    assert index.ntotal == 3000
    assert search_metrics(index, vectors, unit_vectors(50, seed=1))["recall@10"] >= 0.9


def test_paper_meta_keeps_row_order_and_fills_an_older_prepared_table() -> None:
    # A prepared table from before authors/published (and subjects): empty values, subjects = [subject].
    papers = pd.DataFrame(
        {"id": ["b", "a"], "title": ["T2", "T1"], "abstract": ["x", None], "subject": ["cs.LG", "hep-th"]}
    )
    assert paper_meta(papers).to_pydict() == {
        "id": ["b", "a"],
        "title": ["T2", "T1"],
        "subject": ["cs.LG", "hep-th"],
        "subjects": [["cs.LG"], ["hep-th"]],
        "authors": [[], []],
        "published": ["", ""],
        "update_date": ["", ""],
        "abstract": ["x", ""],
    }


def test_paper_meta_round_trips_through_the_servers_loader(tmp_path: Path) -> None:
    papers = pd.DataFrame(
        {
            "id": ["2101.00002", "hep-th/9901001"],
            "title": ["T2", "T1"],
            "abstract": ["An abstract.", "Another one."],
            "subject": ["cs.LG", "hep-th"],
            "subjects": [np.array(["cs.LG", "stat.ML"]), np.array(["hep-th"])],
            "update_date": ["2021-03-02", "1999-01-04"],
            "authors": [
                np.array(["Ada Lovelace", "Alan Turing"]),
                np.array([], dtype=object),
            ],  # as parquet reads
            "published": ["2021-01-04", ""],
        }
    )
    vectors = unit_vectors(2)
    faiss.write_index(build_index(vectors, PARAMS), str(tmp_path / INDEX_FILE))
    write_meta(paper_meta(papers), tmp_path)
    loaded = load_index(tmp_path, dimensions=16)
    assert loaded.records([0, 1]) == [
        {
            "id": "2101.00002",
            "title": "T2",
            "subject": "cs.LG",
            "subjects": ["cs.LG", "stat.ML"],
            "authors": ["Ada Lovelace", "Alan Turing"],
            "published": "2021-01-04",
            "update_date": "2021-03-02",
            "abstract": "An abstract.",
            "url": "https://arxiv.org/abs/2101.00002",
            "pdf_url": "https://arxiv.org/pdf/2101.00002",
        },
        {
            "id": "hep-th/9901001",
            "title": "T1",
            "subject": "hep-th",
            "subjects": ["hep-th"],
            "authors": [],
            "published": "",
            "update_date": "1999-01-04",
            "abstract": "Another one.",
            "url": "https://arxiv.org/abs/hep-th/9901001",
            "pdf_url": "https://arxiv.org/pdf/hep-th/9901001",
        },
    ]
    assert list(loaded.dates.astype(str)) == ["2021-01-04", "1999-01-04"]  # published, else update_date


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "encoder"), [("flat", "onnx"), ("hnsw", "onnx"), ("ivf_pq_sq8", "onnx"), ("flat", "torch")]
)
def test_main_builds_index_and_metadata(
    kind: str, encoder: str, tiny_project: Path, onnx_minilm_dir: Path
) -> None:
    run_stages("prepare")
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["faiss_build"].update(
        index=kind, encoder=encoder, batch_size=16, torch_batch_size=16, n_recall_queries=20, hnsw_m=16
    )
    params["faiss_build"].update(ivf_nlist=4, ivf_nprobe=4)  # the tiny corpus: every list probed
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    onnx_dir = Path(params["paths"]["onnx_dir"])
    onnx_dir.parent.mkdir(parents=True, exist_ok=True)
    onnx_dir.symlink_to(onnx_minilm_dir, target_is_directory=True)
    # encoder torch: the bundled MiniLM stands in for the fine-tuned model that onnx_minilm_dir exports
    Path(params["paths"]["embedder_dir"]).symlink_to(resolve_model(MINILM), target_is_directory=True)

    run_stages("faiss_build")

    out = Path(params["paths"]["faiss_dir"])
    index = faiss.read_index(str(out / "index.faiss"))
    meta = feather.read_table(out / META_FILE).to_pandas()
    papers = pd.read_parquet(params["paths"]["prepared"])
    assert index.ntotal == len(meta) == len(papers)
    assert list(meta.columns) == META_SCHEMA.names
    assert meta.abstract.tolist() == papers.abstract.tolist()
    assert [list(s) for s in meta.subjects] == [list(s) for s in papers.subjects]
    # Row i of the index is the paper of row i of meta.arrow: its own text finds it first.
    row = 7
    text = f"{meta.title[row]}. {papers.set_index('id').abstract[meta.id[row]]}"
    query = OnnxEncoder(onnx_minilm_dir, "model_int8.onnx").encode([text])
    _, ids = index.search(query, 1)
    assert ids[0, 0] == row
    metrics = json.loads((Path(params["paths"]["metrics_dir"]) / "faiss_build.json").read_text())
    assert metrics["n_vectors"] == len(papers)
    assert metrics["dimension"] == 384
    assert metrics["encode_texts_per_second"] > 0
    assert ("recall@10" in metrics) == (kind != "flat")
