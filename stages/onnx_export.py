"""ONNX export: the fine-tuned model as ONNX (fp32 and dynamic int8), checked against Sentence Transformers.

Reads   ``${paths.embedder_dir}`` (the SentenceTransformer: fine-tuned, with its adapter), ``${paths.split_dir}/test.parquet``.
Params  ``onnx_export`` (parity sample, gates), ``ir_eval`` (the retrieval protocol), ``meta``.
Writes  ``${paths.onnx_dir}``: ``model.onnx``, ``model_int8.onnx``, ``tokenizer.json``, ``config.json``;
        ``metrics/onnx_export.json``: cosine of the ONNX vectors to Sentence Transformers' on test papers
        (``fp32_cosine_min``, ``int8_cosine_mean``, ...), precision@10 of both models on the ``ir_eval``
        protocol and the int8 drop, file sizes.

Gates (a failed one exits non-zero after writing the metrics): fp32 cosine >= ``min_cosine_fp32`` for every
text, int8 mean cosine >= ``min_mean_cosine_int8``, int8 precision@10 at most ``max_precision_drop_int8``
below fp32.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from arxiv_embed.encode import encode_papers
from arxiv_embed.io import atomic_dir, read_split, write_json
from arxiv_embed.metrics import IRSample, cosine_scores, ir_metrics, ir_sample, stratified_sample
from arxiv_embed.models import load_model
from arxiv_embed.onnx import INT8_FILE, MODEL_FILE, OnnxEncoder, export_onnx, quantize_int8
from arxiv_embed.params import OnnxExportParams, run_stage_check
from arxiv_embed.pooling import rowwise_cosine
from arxiv_embed.storage import stage_storage
from arxiv_embed.text import TextMode, papers_texts

VARIANTS = {"fp32": MODEL_FILE, "int8": INT8_FILE}


def onnx_encode(encoder: OnnxEncoder, papers: pd.DataFrame, mode: TextMode, batch_size: int) -> np.ndarray:
    return encoder.encode(papers_texts(papers, mode), batch_size=batch_size)


def parity_metrics(name: str, vectors: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Cosine of each ONNX vector to the Sentence Transformers vector of the same text."""
    cosine = rowwise_cosine(vectors, reference)
    return {f"{name}_cosine_min": float(cosine.min()), f"{name}_cosine_mean": float(cosine.mean())}


def retrieval_metrics(
    name: str, queries: np.ndarray, corpus: np.ndarray, sample: IRSample
) -> dict[str, float]:
    scores = cosine_scores(queries, corpus)
    found = ir_metrics(scores, sample.queries["subject"], sample.corpus["subject"])
    return {f"{name}_{k}": found[k] for k in ("precision@10", "ndcg@10")}


def gate_failures(metrics: dict[str, float], params: OnnxExportParams) -> list[str]:
    """The gates the metrics miss, each with its numbers; empty when all pass."""
    checks = [
        (
            "fp32_cosine_min",
            metrics["fp32_cosine_min"] >= params.min_cosine_fp32,
            f">= {params.min_cosine_fp32}",
        ),
        (
            "int8_cosine_mean",
            metrics["int8_cosine_mean"] >= params.min_mean_cosine_int8,
            f">= {params.min_mean_cosine_int8}",
        ),
        (
            "int8_precision@10_drop",
            metrics["int8_precision@10_drop"] <= params.max_precision_drop_int8,
            f"<= {params.max_precision_drop_int8}",
        ),
    ]
    return [f"{key} = {metrics[key]:.6f}, required {bound}" for key, ok, bound in checks if not ok]


@stage_storage("onnx_export")
def main() -> None:
    p = run_stage_check("onnx_export")
    params, protocol, paths, meta = p.onnx_export, p.ir_eval, p.paths, p.meta
    mode: TextMode = meta.text_mode
    out = Path(paths.onnx_dir)

    start = time.perf_counter()
    with atomic_dir(out) as staging:
        fp32 = export_onnx(paths.embedder_dir, staging, meta.max_seq_length, protocol.matryoshka_dims)
        quantize_int8(fp32, staging / INT8_FILE)
    metrics: dict[str, float] = {"export_seconds": time.perf_counter() - start}

    test = read_split(paths.split_dir, "test")
    parity = stratified_sample(test, params.n_parity_texts, meta.seed)
    model = load_model(paths.embedder_dir, max_seq_length=meta.max_seq_length)
    reference = encode_papers(model, parity, mode, params.batch_size, "Sentence Transformers reference")
    sample = ir_sample(test, protocol.n_queries, protocol.n_corpus, meta.seed)
    for name, file in VARIANTS.items():
        encoder = OnnxEncoder(out, file)
        metrics.update(parity_metrics(name, onnx_encode(encoder, parity, mode, params.batch_size), reference))
        start = time.perf_counter()
        queries = onnx_encode(encoder, sample.queries, mode, params.batch_size)
        corpus = onnx_encode(encoder, sample.corpus, mode, params.batch_size)
        metrics[f"{name}_texts_per_second"] = (len(queries) + len(corpus)) / (time.perf_counter() - start)
        metrics.update(retrieval_metrics(name, queries, corpus, sample))
        metrics[f"{name}_size_mb"] = (out / file).stat().st_size / 2**20
    metrics["int8_precision@10_drop"] = metrics["fp32_precision@10"] - metrics["int8_precision@10"]
    metrics.update(
        {"n_parity_texts": len(parity), "n_queries": len(sample.queries), "n_corpus": len(sample.corpus)}
    )

    write_json(Path(paths.metrics_dir) / "onnx_export.json", metrics)
    print({k: round(v, 5) for k, v in metrics.items()})
    failures = gate_failures(metrics, params)
    if failures:
        raise SystemExit("onnx_export: quality gate failed: " + "; ".join(failures))


if __name__ == "__main__":
    main()
