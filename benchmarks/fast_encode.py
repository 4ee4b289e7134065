"""Corpus encoding throughput: ``fast_encode`` vs ``model.encode``, and the tokenizer alone (issue 6).

Encodes the same real papers (title + abstract, the pipeline's text, truncated at ``--max-seq-length`` tokens)
end to end (texts in, numpy vectors out, tokenisation included) with ``arxiv_embed.encode.fast_encode`` and
with plain ``model.encode``, at each batch size asked for, in interleaved rounds after a warm-up, and prints
texts/s (median over rounds) and the lowest cosine between the two paths' vectors. ``tokenize only`` runs the
tokenising threads of ``fast_encode`` without the model: the most the fast path can reach on this host.

On CUDA the model runs in half precision (both paths); on a CPU in fp32 with torch's threads.

    uv run python benchmarks/fast_encode.py --n 50000 --batch-sizes 256,1024     # on a GPU
    uv run python benchmarks/fast_encode.py --n 300 --batch-sizes 32 --rounds 2  # quick CPU check
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from arxiv_embed.encode import batch_tokenizer, fast_encode, prefetch, tokenize_batch
from arxiv_embed.io import read_parquet
from arxiv_embed.models import MINILM, load_model
from arxiv_embed.pooling import rowwise_cosine
from arxiv_embed.text import papers_texts


def tokenize_only(model, texts: list[str], batch_size: int, workers: int) -> None:
    """The tokenising half of ``fast_encode``: length-sorted batches through the prefetching threads."""
    tokenizer, pad_id = batch_tokenizer(model), int(model.tokenizer.pad_token_id or 0)
    ordered = sorted(texts, key=len, reverse=True)
    starts = iter(range(0, len(ordered), batch_size))
    for _ in prefetch(
        lambda s: tokenize_batch(tokenizer, ordered[s : s + batch_size], pad_id), starts, workers, 8
    ):
        pass


def encode_paths(
    model, texts: list[str], batch_size: int, workers: int
) -> dict[str, Callable[[], np.ndarray | None]]:
    """The three things timed, by name; each returns its vectors (None for the tokenizer alone)."""
    return {
        "tokenize only": lambda: tokenize_only(model, texts, batch_size, workers),
        "fast_encode": lambda: fast_encode(model, texts, batch_size=batch_size, workers=workers),
        "model.encode": lambda: model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--papers", default="data/prepared/papers.parquet")
    parser.add_argument("--model", default=MINILM)
    parser.add_argument("--n", type=int, default=20_000, help="first N papers")
    parser.add_argument("--batch-sizes", default="256,1024")
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2, help="tokenising threads of fast_encode")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    texts = papers_texts(read_parquet(args.papers).head(args.n))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(args.model, device=device, max_seq_length=args.max_seq_length)
    if device == "cuda":
        model.half()
    name = (
        torch.cuda.get_device_name(0) if device == "cuda" else f"CPU, {torch.get_num_threads()} torch threads"
    )
    print(f"{len(texts)} texts, max {args.max_seq_length} tokens, {args.model} on {name}")

    print("| batch | path | texts/s | min cosine vs model.encode |\n|---|---|---|---|")
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        paths = encode_paths(model, texts, batch_size, args.workers)
        fast_encode(model, texts[: 4 * batch_size], batch_size=batch_size)  # warm-up
        rates: dict[str, list[float]] = {path: [] for path in paths}
        vectors: dict[str, np.ndarray | None] = {}
        for _ in range(args.rounds):
            for path, run in paths.items():
                start = time.perf_counter()
                vectors[path] = run()
                rates[path].append(len(texts) / (time.perf_counter() - start))
        reference = np.asarray(vectors["model.encode"])
        for path, rate in rates.items():
            found = vectors[path]
            cosine = "-" if found is None else f"{rowwise_cosine(np.asarray(found), reference).min():.6f}"
            print(f"| {batch_size} | {path} | {statistics.median(rate):,.0f} | {cosine} |", flush=True)


if __name__ == "__main__":
    main()
