"""FAISS build: a search index of the prepared papers, embedded with the exported ONNX model.

Reads   ``${paths.prepared}``, and ``${paths.onnx_dir}`` (``faiss_build.model_file``: int8 or fp32) with
        ``faiss_build.encoder: onnx`` (ONNX Runtime on the CPU) or ``${paths.embedder_dir}`` with ``encoder: torch``
        (the fine-tuned model through :func:`arxiv_embed.encode.fast_encode`: fp16 on a GPU when there is one,
        for large corpora; the API then embeds queries with a different graph of the same model).
Params  ``faiss_build`` (index type and its settings), ``meta``.
Writes  ``${paths.faiss_dir}/index.faiss`` (inner product over L2-normalised vectors = cosine) and
        ``${paths.faiss_dir}/meta.arrow`` (an uncompressed Arrow IPC file, which the API memory-maps rather than
        reads: at full-arXiv scale the abstracts stay on disk; row i of the index -> ``id``, ``title``,
        ``subject`` (primary),
        ``subjects`` (all categories), ``authors``, ``published`` (first version), ``update_date``, ``abstract``:
        what a search result shows; a prepared table without ``subjects``, ``authors`` or ``published``, from an
        older ``prepare``, gives ``[subject]``, ``[]`` and "");
        ``metrics/faiss_build.json``: vectors, encode rate, build time, search latency and, for the approximate
        ``ivf*`` and ``hnsw*`` indexes, ``recall@10`` against exact search on held-out queries.

Held-out queries are the titles of ``n_recall_queries`` papers drawn with ``meta.seed``: texts that are not
in the index as such (it holds title + abstract), like the short queries the API's ``/search`` gets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather

from arxiv_embed.io import atomic_dir, read_parquet, write_json
from arxiv_embed.metrics import stratified_sample
from arxiv_embed.onnx import OnnxEncoder
from arxiv_embed.params import FaissBuildParams, run_stage_check
from arxiv_embed.pooling import l2_normalize
from arxiv_embed.storage import stage_storage
from arxiv_embed.text import TextMode, papers_texts

INDEX_FILE = "index.faiss"
META_FILE = "meta.arrow"
META_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("title", pa.large_string()),
        ("subject", pa.string()),
        ("subjects", pa.list_(pa.string())),
        ("authors", pa.list_(pa.string())),
        ("published", pa.string()),
        ("update_date", pa.string()),
        ("abstract", pa.large_string()),
    ]
)
K = 10


# One entry per ``faiss_build.index``: the faiss index_factory string it builds (inner product throughout).
FACTORY: dict[str, Callable[[FaissBuildParams], str]] = {
    "flat": lambda p: "Flat",
    "ivf": lambda p: f"IVF{p.ivf_nlist},Flat",
    "ivf_sq8": lambda p: f"IVF{p.ivf_nlist},SQ8",
    "ivf_pq": lambda p: f"IVF{p.ivf_nlist},PQ{p.pq_m}x{p.pq_bits}",
    # Fast-scan 4-bit PQ codes find k x refine_k_factor candidates, their 8-bit scalar-quantised vectors rank them.
    "ivf_pq_sq8": lambda p: f"IVF{p.ivf_nlist},PQ{p.pq_m}x4fs,Refine(SQ8)",
    "hnsw": lambda p: f"HNSW{p.hnsw_m},Flat",
    "hnsw_sq8": lambda p: f"HNSW{p.hnsw_m},SQ8",  # the graph over 8-bit scalar-quantised vectors
}


def new_index(dim: int, params: FaissBuildParams) -> faiss.Index:
    """An empty inner-product index of the type ``params.index`` names, with its build and search settings."""
    if params.index not in FACTORY:
        raise ValueError(f"unknown index type {params.index!r}; expected one of {', '.join(FACTORY)}")
    if params.index.startswith("ivf_pq") and dim % params.pq_m:
        raise ValueError(f"{params.index} index: pq_m = {params.pq_m} does not divide the dimension {dim}")
    index = faiss.index_factory(dim, FACTORY[params.index](params), faiss.METRIC_INNER_PRODUCT)
    if params.index.startswith("ivf"):
        faiss.extract_index_ivf(index).nprobe = params.ivf_nprobe
    if params.index == "ivf_pq":
        index.do_polysemous_training = False  # minutes of training for a Hamming filter search never uses
    elif params.index == "ivf_pq_sq8":
        index.k_factor = params.refine_k_factor
    elif params.index.startswith("hnsw"):
        index.hnsw.efConstruction = params.hnsw_ef_construction
        index.hnsw.efSearch = params.hnsw_ef_search
    return index


def train_index(index: faiss.Index, vectors: np.ndarray, params: FaissBuildParams) -> None:
    """Train ``index`` (IVF clusters, SQ ranges, PQ codebooks) on ``vectors``; nothing for flat and hnsw."""
    if index.is_trained:
        return
    if params.index.startswith("ivf") and len(vectors) < params.ivf_nlist:
        raise ValueError(
            f"{params.index} index: {len(vectors)} vectors cannot train {params.ivf_nlist} clusters (ivf_nlist)"
        )
    index.train(np.ascontiguousarray(vectors, dtype=np.float32))


def build_index(vectors: np.ndarray, params: FaissBuildParams) -> faiss.Index:
    """An inner-product index of ``vectors`` (n x dim float32) of the type ``params.index`` names."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = new_index(vectors.shape[1], params)
    train_index(index, vectors, params)
    index.add(vectors)
    return index


def corpus_encoder(
    params: FaissBuildParams, onnx_dir: str | Path, model_dir: str | Path, max_seq_length: int
) -> Callable[[list[str]], np.ndarray]:
    """Texts -> L2-normalised float32 vectors, with the encoder ``params.encoder`` names."""
    if params.encoder == "onnx":
        onnx = OnnxEncoder(onnx_dir, params.model_file, threads=params.threads)
        return lambda texts: onnx.encode(texts, batch_size=params.batch_size)
    if params.encoder != "torch":
        raise ValueError(f"unknown encoder {params.encoder!r}; expected onnx or torch")
    import torch

    from arxiv_embed.encode import fast_encode
    from arxiv_embed.models import load_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(str(model_dir), device=device, max_seq_length=max_seq_length)
    print(f"encoding with {model_dir} on {device}", flush=True)
    return lambda texts: fast_encode(model, texts, batch_size=params.torch_batch_size)


def truncate(vectors: np.ndarray, dimension: int | None) -> np.ndarray:
    """The first ``dimension`` coordinates of each vector, renormalised (all of them when None)."""
    if dimension is None or dimension == vectors.shape[1]:
        return vectors
    if dimension > vectors.shape[1]:
        raise ValueError(f"faiss_build.dimension = {dimension} is more than the model's {vectors.shape[1]}")
    return l2_normalize(np.ascontiguousarray(vectors[:, :dimension]))


def recall_at_k(found: np.ndarray, exact: np.ndarray, k: int = K) -> float:
    """Mean share of each query's exact top-k that the approximate top-k also returns."""
    hits = [len(set(f[:k]) & set(e[:k])) / min(k, len(e)) for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits))


def paper_meta(papers: pd.DataFrame) -> pa.Table:
    """The row -> paper table stored beside the index (``META_SCHEMA``); missing values are empty."""
    papers = papers.reset_index(drop=True)
    defaults = {"subjects": [[s] for s in papers["subject"]], "authors": [[]] * len(papers)}
    columns = {}
    for field in META_SCHEMA:
        if field.name not in papers:
            columns[field.name] = defaults.get(field.name, [""] * len(papers))
        elif pa.types.is_list(field.type):
            columns[field.name] = [[] if v is None else list(v) for v in papers[field.name]]
        else:
            columns[field.name] = papers[field.name].fillna("")
    return pa.table(columns, schema=META_SCHEMA)


def write_meta(table: pa.Table, folder: Path) -> None:
    """``table`` as ``folder/meta.arrow``: uncompressed, so a reader can memory-map it."""
    feather.write_feather(table, folder / META_FILE, compression="uncompressed")


def search_metrics(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    """Search latency of the index and, when it is approximate, its recall@10 against exact search."""
    start = time.perf_counter()
    _, found = index.search(queries, K)
    metrics = {"search_ms_per_query": 1000 * (time.perf_counter() - start) / len(queries)}
    if not isinstance(index, faiss.IndexFlat):
        exact = faiss.IndexFlatIP(vectors.shape[1])
        exact.add(vectors)
        _, truth = exact.search(queries, K)
        metrics[f"recall@{K}"] = recall_at_k(found, truth)
    return metrics


@stage_storage("faiss_build")
def main() -> None:
    p = run_stage_check("faiss_build")
    params, paths, meta = p.faiss_build, p.paths, p.meta
    mode: TextMode = meta.text_mode
    if params.threads is not None:
        faiss.omp_set_num_threads(params.threads)
    encode = corpus_encoder(params, paths.onnx_dir, paths.embedder_dir, meta.max_seq_length)
    papers = stratified_sample(read_parquet(paths.prepared), params.max_papers, meta.seed)

    start = time.perf_counter()
    texts = papers_texts(papers, mode)
    vectors = truncate(encode(texts), params.dimension)
    encode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    index = build_index(vectors, params)
    build_seconds = time.perf_counter() - start

    held_out = papers.sample(n=min(params.n_recall_queries, len(papers)), random_state=meta.seed)
    queries = truncate(encode(held_out["title"].tolist()), params.dimension)
    out = Path(paths.faiss_dir)
    with atomic_dir(out) as staging:
        faiss.write_index(index, str(staging / INDEX_FILE))
        write_meta(paper_meta(papers), staging)
    metrics = {
        "n_vectors": index.ntotal,
        "dimension": index.d,
        "encode_seconds": encode_seconds,
        "encode_texts_per_second": len(texts) / encode_seconds,
        "build_seconds": build_seconds,
        "index_size_mb": (out / INDEX_FILE).stat().st_size / 2**20,
        "n_recall_queries": len(queries),
        **search_metrics(index, vectors, queries),
    }
    write_json(Path(paths.metrics_dir) / "faiss_build.json", metrics)
    print({k: round(float(v), 4) for k, v in metrics.items()})


if __name__ == "__main__":
    main()
