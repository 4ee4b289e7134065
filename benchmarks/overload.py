"""Goodput under overload, before vs after a change of the server: texts/s answered 200 just below the
queue's limit and far above it, side by side.

Two copies of the server run at once, each ``python -m serve`` from its own folder (``--before``: a folder
holding ``serve/`` and ``src/`` of the older code, e.g. ``git archive 6a741d4 serve src | tar -x -C DIR``;
``--after``: this repository), on the same ONNX model, with their default settings. Two phases: ``--peak``
connections (default 12: 12 x 64 texts stay below the default ``max_queue`` of 1,024, so the old code refuses
nothing) and ``--overload`` connections (default 64), each connection sending ``/v1/embeddings`` requests of
``--texts`` real abstracts in a closed loop. One server runs one phase at a time; ``--rounds`` rounds cycle
through the four (server, phase) slices, so load from elsewhere on the machine falls on all of them alike, and
each slice's figures add up over the rounds. A 429 or 503 is followed by a pause of its ``Retry-After`` (1 s on both), as OpenAI's client does;
``--no-backoff`` retries at once instead. Prints, per server and phase, goodput (texts in 200 answers per
second), answers by status, latency of the 200s and of the refusals, and the ratio of overload to peak goodput.

    uv run python benchmarks/overload.py --before /tmp/before --model-dir /tmp/onnx
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_load import Connection, free_port, load_texts, stop, wait_healthy

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared/data/arxiv-sample.jsonl.gz"


@dataclass
class Answer:
    start: float
    end: float
    status: int  # 0: the connection failed
    texts: int


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def closed_loop(
    port: int, bodies: list[bytes], texts: int, connections: int, seconds: float, backoff: bool
) -> tuple[float, float, list[Answer]]:
    """Every connection sends a request as soon as the previous one is answered (after a 429/503's
    Retry-After with ``backoff``), for ``seconds``."""
    answers: list[Answer] = []
    begin = time.perf_counter()
    end = begin + seconds
    counter = 0

    async def one(slot: int) -> None:
        nonlocal counter
        conn = await Connection.open("127.0.0.1", port)
        try:
            while time.perf_counter() < end:
                counter += 1
                body = bodies[(slot + counter) % len(bodies)]
                start = time.perf_counter()
                try:
                    status, _ = await conn.request("POST", "/v1/embeddings", body)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    answers.append(Answer(start, time.perf_counter(), 0, texts))
                    await conn.close()
                    conn = await Connection.open("127.0.0.1", port)
                    continue
                answers.append(Answer(start, time.perf_counter(), status, texts))
                if status in (429, 503) and backoff:
                    await asyncio.sleep(1.0)
        finally:
            await conn.close()

    await asyncio.gather(*(one(i) for i in range(connections)))
    return begin, end, answers


def summarise(
    server: str, phase: str, connections: int, parts: list[tuple[tuple[float, float], list[Answer]]]
) -> dict[str, object]:
    """Figures of the answers that ended inside their slice's window, over all slices."""
    done = [a for (start, end), answers in parts for a in answers if start <= a.end <= end]
    seconds = sum(end - start for (start, end), _ in parts)
    ok = [a for a in done if a.status == 200]
    refused = [a for a in done if a.status in (429, 503)]
    by_status: dict[str, int] = {}
    for a in done:
        by_status[str(a.status)] = by_status.get(str(a.status), 0) + 1
    return {
        "server": server,
        "phase": phase,
        "connections": connections,
        "goodput_texts_per_s": round(sum(a.texts for a in ok) / seconds, 1),
        "answers": json.dumps(dict(sorted(by_status.items()))),
        "ok_p50_s": round(percentile([a.end - a.start for a in ok], 0.5), 2),
        "ok_p99_s": round(percentile([a.end - a.start for a in ok], 0.99), 2),
        "refused_p50_ms": round(1000 * percentile([a.end - a.start for a in refused], 0.5), 1),
        "refused_p99_ms": round(1000 * percentile([a.end - a.start for a in refused], 0.99), 1),
    }


def start_server(name: str, folder: Path, model_dir: Path, port: int, extra: dict[str, str]):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARXIV_EMBED_")}
    env |= {
        "PORT": str(port),
        "PYTHONPATH": f"{folder / 'src'}{os.pathsep}{folder}",
        "ARXIV_EMBED_MODEL_DIR": str(model_dir),
        "ARXIV_EMBED_INDEX_DIR": "",
        "ARXIV_EMBED_CLASSIFIER_DIR": "",
        "ARXIV_EMBED_LOG_LEVEL": "warning",
        **extra,
    }
    log = open(f"/tmp/overload_{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "serve"], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    return wait_healthy(proc, port, name, log.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--before", type=Path, required=True, help="folder with serve/ and src/ of the old code"
    )
    parser.add_argument("--after", type=Path, default=REPO)
    parser.add_argument("--model-dir", type=Path, required=True, help="an ONNX export (arxiv_embed.onnx)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--texts", type=int, default=64, help="abstracts per request")
    parser.add_argument("--peak", type=int, default=12, help="connections just below the queue's limit")
    parser.add_argument("--overload", type=int, default=64, help="connections far above it")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time per slice")
    parser.add_argument("--warmup", type=float, default=8.0, help="unmeasured time before each slice")
    parser.add_argument("--no-backoff", action="store_true", help="retry a 429/503 at once")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for both servers")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    _, abstracts = load_texts(args.texts * 8, args.data)
    bodies = [
        json.dumps({"input": abstracts[i : i + args.texts], "model": "arxiv-embed-minilm"}).encode()
        for i in range(0, len(abstracts) - args.texts + 1, args.texts)
    ]
    extra = dict(item.split("=", 1) for item in args.env)
    sides = {"before": args.before.resolve(), "after": args.after.resolve()}
    running = {}
    rows = []
    try:
        for name, folder in sides.items():
            port = free_port()
            running[name] = (port, start_server(name, folder, args.model_dir.resolve(), port, extra))
        slices: dict[tuple[str, str], list[tuple[tuple[float, float], list[Answer]]]] = {}
        for _ in range(args.rounds):
            for phase, connections in (("peak", args.peak), ("overload", args.overload)):
                for name, (port, _) in running.items():
                    # The load starts before the measured window: the queue is full when it opens, and
                    # answers to requests sent before it count when they end inside it.
                    loop = closed_loop(
                        port, bodies, args.texts, connections, args.warmup + args.seconds, not args.no_backoff
                    )
                    begin, end, answers = asyncio.run(loop)
                    window = (begin + args.warmup, end)
                    slices.setdefault((name, phase), []).append((window, answers))
                    row = summarise(name, phase, connections, [(window, answers)])
                    print(json.dumps(row), flush=True)
                    time.sleep(3)  # what is left in the queue drains
        for (name, phase), parts in slices.items():
            connections = args.peak if phase == "peak" else args.overload
            rows.append(summarise(name, phase, connections, parts))
    finally:
        for _, proc in running.values():
            stop(proc)
    cols = list(rows[0])
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    print()
    for name in sides:
        peak = next(r for r in rows if r["server"] == name and r["phase"] == "peak")
        over = next(r for r in rows if r["server"] == name and r["phase"] == "overload")
        ratio = (
            over["goodput_texts_per_s"] / peak["goodput_texts_per_s"] if peak["goodput_texts_per_s"] else 0
        )
        print(f"{name}: overload goodput / peak goodput = {ratio:.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
