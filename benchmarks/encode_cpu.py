"""CPU encode throughput: Sentence Transformers (torch) vs ONNX Runtime fp32 vs int8, side by side.

Encodes the same real abstracts (title + abstract, the pipeline's text) with the same number of threads in
each engine, at each of the batch sizes asked for, in interleaved rounds so that load from other processes
falls on all of them alike, and prints a table: texts/s (median over rounds), speed-up vs torch at the same
batch size and vs torch at its best batch size (medians of the per-round ratios), and cosine of each
engine's vectors to torch's.

    uv run python benchmarks/encode_cpu.py                        # bundled all-MiniLM-L6-v2, 1,000 abstracts
    uv run python benchmarks/encode_cpu.py --model models/finetuned --onnx-dir models/onnx

Without ``--onnx-dir`` the model is exported (fp32 + int8) to a temporary folder first.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from arxiv_embed.models import MINILM, load_model, resolve_model
from arxiv_embed.onnx import INT8_FILE, MODEL_FILE, OnnxEncoder, export_onnx, quantize_int8
from arxiv_embed.pooling import rowwise_cosine
from arxiv_embed.text import clean_whitespace, paper_text

DEFAULT_DATA = str(Path(__file__).resolve().parents[2] / "shared/data/arxiv-sample.jsonl.gz")  # ../shared


def read_texts(path: str, n: int) -> list[str]:
    """Title + abstract of the first ``n`` papers with an abstract in an arXiv JSON Lines file (gzip or plain)."""
    opener = gzip.open if path.endswith(".gz") else open
    texts: list[str] = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            abstract = clean_whitespace(record.get("abstract") or "")
            if abstract:
                texts.append(paper_text(clean_whitespace(record.get("title") or ""), abstract))
            if len(texts) == n:
                break
    if len(texts) < n:
        raise SystemExit(f"{path}: only {len(texts)} papers with an abstract, asked for {n}")
    return texts


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", default=DEFAULT_DATA, help="arXiv JSON Lines snapshot (.jsonl or .jsonl.gz)"
    )
    parser.add_argument("--n", type=int, default=1000, help="abstracts to encode")
    parser.add_argument("--model", default=MINILM, help="SentenceTransformer: hub id, short name or folder")
    parser.add_argument("--onnx-dir", help="export folder of the same model (default: export to a temp dir)")
    parser.add_argument(
        "--batch-sizes", default="16,32", help="comma-separated; every engine runs at each of them"
    )
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of torch and ONNX Runtime")
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds (after a warm-up)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    texts = read_texts(args.data, args.n)
    model = load_model(args.model, device="cpu", max_seq_length=args.max_seq_length)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_dir = Path(args.onnx_dir) if args.onnx_dir else Path(tmp)
        if not args.onnx_dir:
            fp32_path = export_onnx(resolve_model(args.model), onnx_dir, args.max_seq_length)
            quantize_int8(fp32_path, onnx_dir / INT8_FILE)
        fp32 = OnnxEncoder(onnx_dir, MODEL_FILE, threads=args.threads)
        int8 = OnnxEncoder(onnx_dir, INT8_FILE, threads=args.threads)
        if fp32.max_seq_length != args.max_seq_length:
            raise SystemExit(f"{onnx_dir} was exported with max_seq_length {fp32.max_seq_length}")
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        encoders: dict[str, Callable[[list[str], int], np.ndarray]] = {
            "sentence-transformers (torch fp32)": lambda t, b: model.encode(
                t, batch_size=b, normalize_embeddings=True, convert_to_numpy=True
            ),
            "onnxruntime fp32": lambda t, b: fp32.encode(t, batch_size=b),
            "onnxruntime int8": lambda t, b: int8.encode(t, batch_size=b),
        }
        runs = [(name, b) for name in encoders for b in batch_sizes]
        load_before = os.getloadavg()
        for name, b in runs:  # warm-up: first-call allocations, lazy initialisation
            encoders[name](texts[: 2 * b], b)
        seconds: dict[tuple[str, int], list[float]] = {run: [] for run in runs}
        vectors: dict[tuple[str, int], np.ndarray] = {}
        for _ in range(args.rounds):
            for name, b in runs:
                start = time.perf_counter()
                vectors[name, b] = encoders[name](texts, b)
                seconds[name, b].append(time.perf_counter() - start)
        load_after = os.getloadavg()

    torch_name = next(iter(encoders))
    torch_best = min(batch_sizes, key=lambda b: statistics.median(seconds[torch_name, b]))
    n_tokens = fp32.count_tokens(texts)
    print(
        f"{len(texts)} abstracts from {args.data} (title + abstract; tokens: median "
        f"{int(np.median(n_tokens))}, {np.mean(np.array(n_tokens) > args.max_seq_length):.0%} truncated at "
        f"{args.max_seq_length})\nmodel {args.model}; batch sizes {batch_sizes}; {args.threads} threads; "
        f"{args.rounds} rounds after a warm-up\nmachine: {cpu_name()}, {os.cpu_count()} CPUs; load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after; torch {torch.__version__}, "
        f"onnxruntime {ort.__version__}\n"
    )
    print(
        "| engine | batch | texts/s (median) | texts/s (best) | vs torch, same batch "
        f"| vs torch at its best (batch {torch_best}) | cosine vs torch (mean / min) |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")

    def ratio(reference: list[float], other: list[float]) -> float:
        return statistics.median(r / o for r, o in zip(reference, other, strict=True))

    for name, b in runs:
        rates = [len(texts) / s for s in seconds[name, b]]
        cosine = rowwise_cosine(vectors[name, b], vectors[torch_name, b])
        print(
            f"| {name} | {b} | {statistics.median(rates):.1f} | {max(rates):.1f} "
            f"| {ratio(seconds[torch_name, b], seconds[name, b]):.2f}x "
            f"| {ratio(seconds[torch_name, torch_best], seconds[name, b]):.2f}x "
            f"| {cosine.mean():.5f} / {cosine.min():.5f} |"
        )


if __name__ == "__main__":
    main()
