"""Adapter probe: how much a label-aware adapter on frozen embeddings buys, by papers, temperature and dims.

Embeds stratified train papers and the CPU profile's protocols once (cached as .npy under ``--cache``), then
fits adapters (:mod:`arxiv_embed.adapter`) on the first n train papers for each setting and prints, per setting:
precision@10 / MAP@100 on the ``ir_eval`` protocol of the test split, and logistic-regression accuracy /
macro-F1 on the ``logreg`` protocol, both on the adapted vectors, with the fit time.

    uv run python benchmarks/adapter_probe.py --model sentence-transformers/all-MiniLM-L6-v2 \\
        --papers 2000,5000,10000 --temperatures 0.05,0.1,0.2
    # --encoder onnx-int8 (default) exports the model to ONNX and embeds with the int8 graph (2x torch on CPU)
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arxiv_embed.adapter import apply_adapter, fit_adapter
from arxiv_embed.io import read_split
from arxiv_embed.metrics import (
    classification_metrics,
    cosine_scores,
    ir_metrics,
    ir_sample,
    stratified_sample,
)
from arxiv_embed.text import papers_texts


def encoder(model: str, kind: str, max_seq_length: int, threads: int):
    if kind == "torch":
        from arxiv_embed.models import load_model

        st = load_model(model, device="cpu", max_seq_length=max_seq_length)
        return lambda texts: np.asarray(
            st.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=True),
            dtype=np.float32,
        )
    from arxiv_embed.models import resolve_model
    from arxiv_embed.onnx import INT8_FILE, MODEL_FILE, OnnxEncoder, export_onnx, quantize_int8

    out = Path(tempfile.mkdtemp(prefix="probe-onnx-"))
    export_onnx(resolve_model(model), out, max_seq_length)
    file = MODEL_FILE
    if kind == "onnx-int8":
        quantize_int8(out / MODEL_FILE, out / INT8_FILE)
        file = INT8_FILE
    onnx = OnnxEncoder(out, file, threads=threads)
    return lambda texts: onnx.encode(texts, batch_size=32)


def cached(cache: Path, name: str, texts: list[str], encode) -> np.ndarray:
    path = cache / f"{name}-{hashlib.sha1(chr(0).join(texts).encode()).hexdigest()[:12]}.npy"
    if path.exists():
        return np.load(path)
    start = time.perf_counter()
    vectors = encode(texts)
    print(f"{name}: {len(texts)} texts in {time.perf_counter() - start:.0f} s", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--split-dir", default="data/split")
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--encoder", default="onnx-int8", choices=["onnx-int8", "onnx", "torch"])
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--papers", default="2000,5000,10000")
    parser.add_argument("--temperatures", default="0.1")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--hidden", default="0", help="adapter.hidden values (0: linear; e.g. 0,1024)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument(
        "--classifier-weights", default="0", help="adapter.classifier_weight values, e.g. 0,0.5"
    )
    parser.add_argument("--dims", default="", help="Matryoshka dims, e.g. 384,256,128,64 (reported at each)")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--corpus", type=int, default=2000)
    parser.add_argument("--logreg-test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default="/tmp/adapter-probe")
    args = parser.parse_args()

    from sklearn.linear_model import LogisticRegression

    train = read_split(args.split_dir, "train")
    test = read_split(args.split_dir, "test")
    sizes = [int(n) for n in args.papers.split(",")]
    pool = stratified_sample(train, max(sizes), args.seed).sample(frac=1, random_state=args.seed)
    sample = ir_sample(test, args.queries, args.corpus, args.seed)
    clf_test = stratified_sample(test, args.logreg_test, args.seed)
    encode = encoder(args.model, args.encoder, args.max_seq_length, args.threads)
    tag = f"{Path(args.model).name}-{args.encoder}-{args.max_seq_length}"
    cache = Path(args.cache)
    x_pool = cached(cache, f"{tag}-train", papers_texts(pool), encode)
    x_q = cached(cache, f"{tag}-queries", papers_texts(sample.queries), encode)
    x_c = cached(cache, f"{tag}-corpus", papers_texts(sample.corpus), encode)
    x_t = cached(cache, f"{tag}-clftest", papers_texts(clf_test), encode)
    dims = [int(d) for d in args.dims.split(",") if d]

    def measure(name: str, f) -> None:
        row = {"setting": name}
        for d in dims or [x_q.shape[1]]:
            q, c = f(x_q)[:, :d], f(x_c)[:, :d]
            found = ir_metrics(cosine_scores(q, c), sample.queries["subject"], sample.corpus["subject"])
            suffix = f"@{d}" if dims else ""
            row[f"p@10{suffix}"] = found["precision@10"]
            row[f"map@100{suffix}"] = found["map@100"]
        clf = LogisticRegression(C=10.0, max_iter=1000, random_state=args.seed)
        clf.fit(f(x_pool[:n_clf]), pool["subject"].iloc[:n_clf])
        row.update(classification_metrics(list(clf_test["subject"]), list(clf.predict(f(x_t)))))
        print(
            " | ".join(f"{k} {v:.4f}" if isinstance(v, float) else str(v) for k, v in row.items()), flush=True
        )

    n_clf = min(len(pool), 2000)
    measure("untrained", lambda x: x)
    weights = [float(w) for w in args.classifier_weights.split(",")]
    hiddens = [int(h) for h in args.hidden.split(",")]
    settings = (
        (n, float(t), w, h)
        for n in sizes
        for t in args.temperatures.split(",")
        for w in weights
        for h in hiddens
    )
    for n, t, w, h in settings:
        fit = fit_adapter(
            x_pool[:n],
            list(pool["subject"].iloc[:n]),
            temperature=t,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            matryoshka_dims=dims,
            seed=args.seed,
            threads=args.threads,
            classifier_weight=w,
            hidden=h,
        )
        n_clf = n
        name = f"n={n} T={t} classifier_weight={w} hidden={h} fit={fit.seconds:.0f}s"
        measure(name, lambda x, f=fit: apply_adapter(x, f.layers))


if __name__ == "__main__":
    main()
