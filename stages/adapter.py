"""Adapter: a label-aware linear map (or residual MLP, ``adapter.hidden``) on the fine-tuned model's embeddings, trained over subject labels.

Reads   ``${paths.model_dir}`` (the fine-tuned model, or the base model with ``train.loss: none``),
        ``${paths.split_dir}/{train,val}.parquet``.
Params  ``adapter`` section, ``meta`` (seed, text mode, sequence length).
Writes  ``${paths.embedder_dir}``: the model every later stage evaluates, exports and indexes (the fine-tuned model
        with the adapter as a ``Dense`` module, or the fine-tuned model as it is with ``adapter.method: none``);
        ``${paths.embeddings_dir}/train.parquet``: the adapter's papers (id, subject) with their embeddings before
        the adapter, which ``logreg`` reuses instead of encoding them again; ``metrics/adapter.json``: papers,
        encode rate, fit time, validation retrieval before and after the adapter.

The papers are a stratified sample of the train split (``adapter.n_papers``), embedded once with
``adapter.encoder`` (``onnx_int8``: a temporary int8 ONNX export of the model, about twice torch's speed on a CPU
and the graph the API serves; ``torch``: the model itself, fp16 on a GPU). The fit costs seconds.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from arxiv_embed.adapter import apply_adapter, fit_adapter, with_adapter
from arxiv_embed.io import atomic_dir, read_split, write_json, write_parquet
from arxiv_embed.metrics import cosine_scores, ir_metrics, ir_sample, stratified_sample
from arxiv_embed.models import load_model
from arxiv_embed.params import AdapterParams, run_stage_check
from arxiv_embed.storage import stage_storage
from arxiv_embed.text import TextMode, papers_texts

EMBEDDINGS_FILE = "train.parquet"


def paper_encoder(
    model_dir: str, kind: str, max_seq_length: int, batch_size: int, work_dir: Path
) -> Callable[[list[str]], np.ndarray]:
    """Texts -> L2-normalised embeddings of the model in ``model_dir``, with the encoder ``kind`` names."""
    if kind == "onnx_int8":
        from arxiv_embed.onnx import INT8_FILE, OnnxEncoder, export_onnx, quantize_int8

        quantize_int8(export_onnx(model_dir, work_dir, max_seq_length), work_dir / INT8_FILE)
        onnx = OnnxEncoder(work_dir, INT8_FILE)
        return lambda texts: onnx.encode(texts, batch_size=batch_size)
    import torch

    from arxiv_embed.encode import encode_texts

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(model_dir, device=device, max_seq_length=max_seq_length)
    return lambda texts: encode_texts(model, texts, batch_size)


def retrieval(queries: np.ndarray, corpus: np.ndarray, q_subjects: pd.Series, c_subjects: pd.Series) -> dict:
    found = ir_metrics(cosine_scores(queries, corpus), q_subjects, c_subjects)
    return {k: found[k] for k in ("precision@10", "map@100", "mrr@10")}


@stage_storage("adapter")
def main() -> None:
    p = run_stage_check("adapter")
    params: AdapterParams = p.adapter
    paths, meta = p.paths, p.meta
    mode: TextMode = meta.text_mode
    metrics: dict[str, float | str] = {"method": params.method}
    out = Path(paths.embedder_dir)
    embeddings_file = Path(paths.embeddings_dir) / EMBEDDINGS_FILE
    if params.method == "none":  # the fine-tuned model goes on as it is; logreg encodes its own papers
        with atomic_dir(out) as staging:
            shutil.copytree(paths.model_dir, staging, dirs_exist_ok=True)
        write_parquet(pd.DataFrame({"id": [], "subject": [], "embedding": []}), embeddings_file)
        write_json(Path(paths.metrics_dir) / "adapter.json", {"adapter_papers": 0})
        print("adapter: method none, the fine-tuned model is used as it is")
        return
    train = stratified_sample(read_split(paths.split_dir, "train"), params.n_papers, meta.seed)
    val = ir_sample(read_split(paths.split_dir, "val"), params.val_queries, params.val_corpus, meta.seed)
    with tempfile.TemporaryDirectory(prefix="adapter-") as tmp:
        encode = paper_encoder(
            paths.model_dir, params.encoder, meta.max_seq_length, params.encode_batch_size, Path(tmp)
        )
        start = time.perf_counter()
        x = encode(papers_texts(train, mode))
        seconds = time.perf_counter() - start
        vq, vc = encode(papers_texts(val.queries, mode)), encode(papers_texts(val.corpus, mode))
    metrics.update({"encode_seconds": seconds, "encode_texts_per_second": len(train) / seconds})
    subjects = (val.queries["subject"], val.corpus["subject"])
    metrics.update({f"val_before_{k}": v for k, v in retrieval(vq, vc, *subjects).items()})
    fit = fit_adapter(
        x,
        list(train["subject"]),
        temperature=params.temperature,
        epochs=params.epochs,
        batch_size=params.batch_size,
        learning_rate=params.learning_rate,
        weight_decay=params.weight_decay,
        matryoshka_dims=params.matryoshka_dims,
        seed=meta.seed,
        classifier_weight=params.classifier_weight,
        hidden=params.hidden,
    )
    after = retrieval(apply_adapter(vq, fit.layers), apply_adapter(vc, fit.layers), *subjects)
    metrics.update({f"val_after_{k}": v for k, v in after.items()})
    metrics.update(
        {"fit_seconds": fit.seconds, "fit_loss_first": fit.losses[0], "fit_loss_last": fit.losses[-1]}
    )
    model = with_adapter(load_model(paths.model_dir, max_seq_length=meta.max_seq_length), fit.layers)
    with atomic_dir(out) as staging:
        model.save(str(staging))
    write_parquet(
        pd.DataFrame({"id": train["id"], "subject": train["subject"], "embedding": list(x)}), embeddings_file
    )
    metrics.update({"papers": len(train), "val_queries": len(val.queries), "val_corpus": len(val.corpus)})
    write_json(
        Path(paths.metrics_dir) / "adapter.json",
        {f"adapter_{k}": v for k, v in metrics.items() if k != "method"},
    )
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})


if __name__ == "__main__":
    main()
