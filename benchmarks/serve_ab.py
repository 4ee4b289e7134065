"""A/B test of this service's latency: versions or settings of ``python -m serve`` in alternating rounds.

A change worth a few milliseconds of p99 is smaller than the drift of a shared 2-vCPU machine from one
minute to the next, so one run of each version cannot tell them apart. This starts every variant at once
(an idle server uses no CPU), then sends the same load to each in turn, round after round, with
``api_load.py``'s client; drift then hits the variants of a round alike, and the median over rounds of each
variant's ratio to the first is the figure to read.

A variant is ``REV[:NAME=VALUE,...]``: a git revision, checked out with ``git worktree add --detach`` into a
temporary folder (``.`` is the working tree as it is), and environment settings for its server::

    uv run python benchmarks/serve_ab.py 5c4401e .                         # before and after a change
    uv run python benchmarks/serve_ab.py . .:ARXIV_EMBED_MAX_BATCH_SIZE=1   # a setting
    uv run python benchmarks/serve_ab.py 5c4401e . --concurrency 16 --rounds 6 --requests 1200

Every variant runs on this checkout's virtualenv and serves the same model as ``api_load.py`` (the
pipeline's ``models/onnx``, else the bundled MiniLM exported to ONNX). Prints one line per round and variant,
then a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import api_load  # a sibling script, not a package

REPO = api_load.REPO


def checkout(rev: str, stack: ExitStack) -> Path:
    """A folder with ``rev`` checked out (removed when ``stack`` closes); ``.`` is this working tree."""
    if rev == ".":
        return REPO
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="serve-ab-"))) / "tree"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--quiet", "--detach", str(folder), rev], check=True
    )
    stack.callback(subprocess.run, ["git", "-C", str(REPO), "worktree", "remove", "--force", str(folder)])
    return folder


def parse_variant(spec: str) -> tuple[str, dict[str, str]]:
    rev, _, settings = spec.partition(":")
    env = {}
    for item in filter(None, settings.split(",")):
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{spec!r}: settings are NAME=VALUE, comma-separated")
        env[name] = value
    return rev, env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", help="REV[:NAME=VALUE,...]; the first is the baseline")
    parser.add_argument("--payload", default="short", choices=api_load.PAYLOADS)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--requests", type=int, default=1800, help="per variant and round")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--work", type=Path, default=Path("/tmp/api_load"))
    parser.add_argument("--data", type=Path, default=api_load.SHARED_DATA)
    args = parser.parse_args()
    if len(args.variants) < 2:
        parser.error("give at least two variants")

    args.work.mkdir(parents=True, exist_ok=True)
    titles, abstracts = api_load.load_texts(512, args.data)
    onnx_dir, _ = api_load.our_model(args.work)
    base_env = {"ARXIV_EMBED_MODEL_DIR": str(onnx_dir), "ARXIV_EMBED_LOG_LEVEL": "warning"}
    p99: dict[str, list[float]] = {v: [] for v in args.variants}
    p50: dict[str, list[float]] = {v: [] for v in args.variants}
    rps: dict[str, list[float]] = {v: [] for v in args.variants}
    with ExitStack() as stack:
        running = {}
        for i, spec in enumerate(args.variants):
            rev, env = parse_variant(spec)
            tree = checkout(rev, stack)
            server = api_load.Server(
                f"ab{i}",
                [sys.executable, "-m", "serve"],
                tree,
                base_env | env | {"PYTHONPATH": f"{tree / 'src'}:{tree}"},
                "/v1/embeddings",
                "m",
            )
            port = api_load.free_port()
            proc = api_load.start(server, port)
            stack.callback(api_load.stop, proc)
            running[spec] = port
        data = api_load.bodies(args.payload, "m", titles, abstracts)
        for port in running.values():  # warm-up
            asyncio.run(api_load.run_load(port, "/v1/embeddings", data, 200, args.concurrency))
        for r in range(args.rounds):
            for spec, port in running.items():
                seconds, samples = asyncio.run(
                    api_load.run_load(port, "/v1/embeddings", data, args.requests, args.concurrency)
                )
                if any(status != 200 for _, status in samples):
                    raise SystemExit(f"{spec}: requests failed")
                ms = np.array([m for m, _ in samples])
                p50[spec].append(float(np.percentile(ms, 50)))
                p99[spec].append(float(np.percentile(ms, 99)))
                rps[spec].append(len(samples) / seconds)
                print(
                    f"round {r + 1} {spec}: {rps[spec][-1]:.0f} req/s, p50 {p50[spec][-1]:.1f} ms, "
                    f"p99 {p99[spec][-1]:.1f} ms",
                    flush=True,
                )
    base = args.variants[0]
    print(
        f"\n{args.payload} at {args.concurrency} connections, {args.requests} requests per variant and round, "
        f"{args.rounds} rounds (medians over rounds; ratios: median of each round's ratio to {base})\n"
    )
    print("| variant | req/s | p50 ms | p99 ms | req/s ratio | p99 ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for spec in args.variants:
        rps_ratio = statistics.median(a / b for a, b in zip(rps[spec], rps[base], strict=True))
        p99_ratio = statistics.median(a / b for a, b in zip(p99[spec], p99[base], strict=True))
        print(
            f"| {spec} | {statistics.median(rps[spec]):.0f} | {statistics.median(p50[spec]):.1f} | "
            f"{statistics.median(p99[spec]):.1f} | {rps_ratio:.3f} | {p99_ratio:.3f} |"
        )


if __name__ == "__main__":
    main()
