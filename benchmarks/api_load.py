"""API load on loopback: this service vs infinity-emb serving the same model on the same machine.

All servers run at once, each a subprocess on a free loopback port, and every measurement cycles through
them (the idle ones use no CPU), so load from elsewhere on the machine hits them alike; a small asyncio
HTTP/1.1 keep-alive client sends a bounded number of OpenAI-style embedding requests at concurrency 1, 4
and 16 for three payloads: one short text (a paper title), one abstract, a batch of 32 abstracts. Before the
load, every server embeds the same texts (one of them longer than the model reads) and its vectors are compared
with the first server's (cosine): below ``--min-cosine`` the benchmark stops with an error instead of comparing
different models. Every server truncates at the same length, the ``max_seq_length`` of our ONNX export: the
copies of the model that infinity loads are given that length (``sentence_bert_config.json`` for its torch
engine; ``config.json``'s ``max_position_embeddings``, which its optimum engine truncates at, for its ONNX
exports, whose graphs are unchanged). Prints requests/s, texts/s, p50 and p99 latency per server, payload and
concurrency (markdown), and optionally writes them as JSON.

    uv run python benchmarks/api_load.py                    # all five servers below
    uv run python benchmarks/api_load.py --servers ours     # this service alone
    uv run python benchmarks/api_load.py --data path/to/arxiv.jsonl.gz   # default: ../shared/data/ (repo-relative)

Servers: ``ours`` (``python -m serve`` with its defaults: the int8 graph), ``ours-fp32`` (the fp32 graph),
infinity's ``optimum`` engine on its fp32 export and on that export quantized by ``optimum-cli onnxruntime
quantize --avx2 --per_channel`` (infinity picks the quantized file on CPU), and its ``torch`` engine: int8
against int8, fp32 against fp32.

The model: ``models/onnx`` + ``models/finetuned`` when the pipeline produced them, else the bundled MiniLM,
exported to ONNX here (``arxiv_embed.onnx``; infinity's exports with its own ``optimum-cli``).
infinity-emb lives in its own virtualenv, see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared/data/arxiv-sample.jsonl.gz"
MIN_COSINE = 0.99  # int8 vs fp32 of the same model stays above; a different truncation or model does not
PAYLOADS = ("short", "abstract", "batch32")
CONCURRENCY = (1, 4, 16)
# Requests per (payload, concurrency): bounded so one server's run takes about a minute on 2 cores.
REQUESTS = {"short": 600, "abstract": 200, "batch32": 8}
WARMUP = 20
SERVER_NAMES = ("ours", "ours-fp32", "infinity-optimum", "infinity-optimum-int8", "infinity-torch")


@dataclass(frozen=True)
class Server:
    name: str
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    path: str  # the embeddings route
    model: str


@dataclass
class Result:
    server: str
    payload: str
    concurrency: int
    requests: int
    texts: int
    seconds: float
    errors: int
    cpu_seconds: float  # the server's CPU time (all its processes) during the run
    latencies_ms: list[float] = field(repr=False)

    def row(self) -> dict[str, object]:
        lat = sorted(self.latencies_ms)
        return {
            "server": self.server,
            "payload": self.payload,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "requests_per_s": round(self.requests / self.seconds, 1),
            "texts_per_s": round(self.texts / self.seconds, 1),
            "p50_ms": round(statistics.median(lat), 1),
            "p99_ms": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1),
            "server_cpu_ms_per_text": round(1000 * self.cpu_seconds / self.texts, 2),
        }


# --- texts -------------------------------------------------------------------------------------------------


def load_texts(n: int, path: Path) -> tuple[list[str], list[str]]:
    """``n`` titles and ``n`` abstracts: from data/prepared (pipeline output) or the shared arXiv sample."""
    prepared = REPO / "data/prepared/papers.parquet"
    if prepared.exists():
        import pandas as pd

        df = pd.read_parquet(prepared, columns=["title", "abstract"]).head(n)
        return df.title.tolist(), df.abstract.tolist()
    titles, abstracts = [], []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            paper = json.loads(line)
            titles.append(" ".join(paper["title"].split()))
            abstracts.append(" ".join(paper["abstract"].split()))
            if len(titles) == n:
                break
    return titles, abstracts


def bodies(payload: str, model: str, titles: list[str], abstracts: list[str]) -> list[bytes]:
    if payload == "short":
        inputs: list[object] = list(titles)
    elif payload == "abstract":
        inputs = list(abstracts)
    else:
        inputs = [abstracts[i : i + 32] for i in range(0, len(abstracts) - 31, 32)]
    return [json.dumps({"input": x, "model": model, "encoding_format": "float"}).encode() for x in inputs]


# --- a minimal keep-alive HTTP/1.1 client (little CPU, so the servers get the cores) ---------------------


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length, chunked = None, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if length is not None:
            return status, await self.reader.readexactly(length)
        if not chunked:
            raise RuntimeError("response without Content-Length or chunked encoding")
        parts = []
        while size := int((await self.reader.readline()).strip(), 16):
            parts.append(await self.reader.readexactly(size))
            await self.reader.readline()
        await self.reader.readline()
        return status, b"".join(parts)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


Samples = list[tuple[float, int]]  # (latency ms, status) per request


async def run_load(
    port: int, path: str, payloads: list[bytes], n: int, concurrency: int
) -> tuple[float, Samples]:
    """Send ``n`` requests (cycling through ``payloads``) over ``concurrency`` connections."""
    connections = [await Connection.open("127.0.0.1", port) for _ in range(concurrency)]
    next_index = 0
    samples: Samples = []

    async def worker(conn: Connection) -> None:
        nonlocal next_index
        while next_index < n:
            body = payloads[next_index % len(payloads)]
            next_index += 1
            start = time.perf_counter()
            status, _ = await conn.request("POST", path, body)
            samples.append(((time.perf_counter() - start) * 1000, status))

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    seconds = time.perf_counter() - start
    for c in connections:
        await c.close()
    return seconds, samples


async def embed_once(port: int, server: Server, texts: list[str]) -> np.ndarray:
    conn = await Connection.open("127.0.0.1", port)
    body = json.dumps({"input": texts, "model": server.model, "encoding_format": "float"}).encode()
    status, raw = await conn.request("POST", server.path, body)
    await conn.close()
    if status != 200:
        raise RuntimeError(f"{server.name}: {status} {raw[:300]!r}")
    return np.array([d["embedding"] for d in json.loads(raw)["data"]], dtype=np.float32)


# --- servers -----------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process group's processes (Linux /proc), in seconds."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pid:  # process group id (field 5 of stat)
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(server: Server, port: int, timeout: float = 300.0) -> subprocess.Popen[bytes]:
    argv = [a.replace("{port}", str(port)) for a in server.argv]
    env = os.environ | server.env | {"PORT": str(port)}
    log = open(f"/tmp/api_load_{server.name}.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        argv, cwd=server.cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    return wait_healthy(proc, port, server.name, log.name, timeout)


def wait_healthy(
    proc: subprocess.Popen[bytes], port: int, name: str, log_name: str, timeout: float = 300.0
) -> subprocess.Popen[bytes]:
    """``proc`` once its ``/health`` answers 200; stopped, with an error naming ``log_name``, otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; see {log_name}")
        try:
            status, _ = asyncio.run(_get(port, "/health"))
            if status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.5)
    stop(proc)
    raise TimeoutError(f"{name} not healthy after {timeout} s")


async def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = await Connection.open("127.0.0.1", port)
    try:
        return await conn.request("GET", path)
    finally:
        await conn.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server and anything it started (its own process group)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclass(frozen=True)
class Models:
    """The same model in every form the servers load."""

    onnx_dir: Path  # ours: model.onnx (fp32) and model_int8.onnx
    st_dir: Path  # the SentenceTransformer folder (infinity's torch engine)
    optimum_dir: Path  # infinity's own fp32 export
    optimum_int8_dir: Path  # the same, quantized by optimum for AVX2 (infinity prefers it on CPU)


def our_model(work: Path) -> tuple[Path, Path]:
    """The ONNX folder this service loads and the SentenceTransformer folder it came from: the pipeline's
    (models/onnx + models/finetuned) when it ran, else the bundled MiniLM exported here."""
    from arxiv_embed.onnx import INT8_FILE, MODEL_FILE

    if (REPO / "models/onnx" / MODEL_FILE).exists() and (REPO / "models/finetuned").exists():
        onnx_dir, st_dir = REPO / "models/onnx", REPO / "models/finetuned"
    else:
        from arxiv_embed.models import resolve_model

        st_dir = Path(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
        onnx_dir = work / "onnx"
        if not (onnx_dir / MODEL_FILE).exists():
            from arxiv_embed.onnx import export_onnx

            export_onnx(st_dir, onnx_dir, 256)
    if not (onnx_dir / INT8_FILE).exists():
        from arxiv_embed.onnx import quantize_int8

        quantize_int8(onnx_dir / MODEL_FILE, onnx_dir / INT8_FILE)
    return onnx_dir, st_dir


def max_tokens(onnx_dir: Path) -> int:
    """The length our export truncates at (``max_seq_length`` of its ``config.json``)."""
    return int(json.loads((onnx_dir / "config.json").read_text())["max_seq_length"])


def set_json(path: Path, **values: object) -> None:
    if path.exists():
        path.write_text(json.dumps(json.loads(path.read_text()) | values, indent=2))


def truncating_at(st_dir: Path, work: Path, tokens: int) -> Path:
    """A copy of the SentenceTransformer folder that truncates at ``tokens`` (infinity's torch engine reads
    ``sentence_bert_config.json``; the tokenizer's ``model_max_length`` too, for good measure)."""
    copy = work / f"st-{st_dir.name}-{tokens}"
    if not copy.exists():
        shutil.copytree(st_dir, copy)
    set_json(copy / "sentence_bert_config.json", max_seq_length=tokens)
    set_json(copy / "tokenizer_config.json", model_max_length=tokens)
    return copy


def prepare_models(work: Path, infinity_venv: Path) -> Models:
    """Ours from :func:`our_model`; infinity's exported from the same folder with its own tools, all
    truncating at our export's length."""
    onnx_dir, st_dir = our_model(work)
    tokens = max_tokens(onnx_dir)
    st_dir = truncating_at(st_dir, work, tokens)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"}
    cli = str(infinity_venv / "bin/optimum-cli")
    optimum_dir = work / f"optimum-{st_dir.name}"
    if not (optimum_dir / "model.onnx").exists():
        subprocess.run(
            [
                cli,
                *("export", "onnx", "--model", str(st_dir), "--task", "feature-extraction"),
                *("--library-name", "transformers", str(optimum_dir)),
            ],
            check=True,
            env=env,
        )
    optimum_int8_dir = work / f"optimum-{st_dir.name}-int8"
    if not (optimum_int8_dir / "model_quantized.onnx").exists():
        subprocess.run(
            [
                *(cli, "onnxruntime", "quantize", "--onnx_model", str(optimum_dir)),
                "--avx2",
                "--per_channel",
                "-o",
                str(optimum_int8_dir),
            ],
            check=True,
            env=env,
        )
    for folder in (optimum_dir, optimum_int8_dir):  # infinity's optimum engine truncates at this
        set_json(folder / "config.json", max_position_embeddings=tokens)
    return Models(onnx_dir, st_dir, optimum_dir, optimum_int8_dir)


def servers(models: Models, infinity_venv: Path) -> dict[str, Server]:
    peer_env = {"HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
    infinity = [str(infinity_venv / "bin/infinity_emb"), "v2", "--port", "{port}", "--log-level", "warning"]
    optimum = [*infinity, "--model-id", ".", "--engine", "optimum", "--pooling-method", "mean"]
    ours_env = {"ARXIV_EMBED_MODEL_DIR": str(models.onnx_dir), "ARXIV_EMBED_LOG_LEVEL": "warning"}
    ours = [sys.executable, "-m", "serve"]
    return {
        # The service as the image runs it: its defaults (int8 graph), nothing tuned for the benchmark.
        "ours": Server("ours", ours, REPO, ours_env, "/v1/embeddings", "arxiv-embed-minilm"),
        "ours-fp32": Server(
            "ours-fp32",
            ours,
            REPO,
            ours_env | {"ARXIV_EMBED_ONNX_FILE": "model.onnx"},
            "/v1/embeddings",
            "arxiv-embed-minilm",
        ),
        "infinity-optimum": Server(
            "infinity-optimum", optimum, models.optimum_dir, peer_env, "/embeddings", "."
        ),
        "infinity-optimum-int8": Server(
            "infinity-optimum-int8", optimum, models.optimum_int8_dir, peer_env, "/embeddings", "."
        ),
        "infinity-torch": Server(
            "infinity-torch",
            [*infinity, "--model-id", str(models.st_dir), "--engine", "torch", "--pooling-method", "mean"],
            REPO,
            peer_env,
            "/embeddings",
            str(models.st_dir),
        ),
    }


def agreement(
    vectors: np.ndarray, reference: np.ndarray, name: str, reference_name: str, least: float
) -> float:
    """The smallest cosine between two servers' (normalised) vectors of the same texts; exits with a message
    when it is below ``least``: a table comparing different models (or truncations) must not be printed."""
    cosine = float((vectors * reference).sum(axis=1).min())
    if cosine < least:
        raise SystemExit(
            f"{name}'s vectors disagree with {reference_name}'s (min cosine {cosine:.4f} < {least}): not the "
            "same model or not the same truncation; no comparison reported"
        )
    return cosine


def markdown(rows: list[dict[str, object]]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--servers",
        default="ours,infinity-optimum-int8,ours-fp32,infinity-optimum,infinity-torch",
        help=f"comma-separated, from: {', '.join(SERVER_NAMES)}",
    )
    parser.add_argument("--payloads", default=",".join(PAYLOADS))
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the request counts")
    parser.add_argument("--infinity-venv", type=Path, default=Path("/tmp/infinity-venv"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/api_load"))
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="arXiv JSON Lines (gzip)")
    parser.add_argument(
        "--min-cosine", type=float, default=MIN_COSINE, help="stop when a server's vectors agree less"
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    titles, abstracts = load_texts(512, args.data)
    available = servers(prepare_models(args.work, args.infinity_venv), args.infinity_venv)
    chosen = [available[name] for name in args.servers.split(",")]
    payloads = args.payloads.split(",")
    levels = [int(c) for c in args.concurrency.split(",")]
    # One text longer than any model here reads: the servers must truncate it alike.
    check_texts = [titles[0], abstracts[1], "graph neural networks", " ".join(abstracts[2:8])]
    rows: list[dict[str, object]] = []
    running: dict[str, tuple[Server, int, subprocess.Popen[bytes]]] = {}
    try:
        # All servers up at once (idle ones use no CPU), then every measurement cycles through them, so
        # a busy neighbour on the machine slows all of them alike rather than whichever ran at the time.
        reference: np.ndarray | None = None
        for server in chosen:
            port = free_port()
            running[server.name] = (server, port, start(server, port))
            vectors = asyncio.run(embed_once(port, server, check_texts))
            reference = vectors if reference is None else reference
            cosine = agreement(vectors, reference, server.name, chosen[0].name, args.min_cosine)
            print(f"{server.name}: min cosine to {chosen[0].name} on check texts = {cosine:.6f}", flush=True)
        for payload in payloads:
            texts_per_request = 32 if payload == "batch32" else 1
            for server, port, _ in running.values():  # warm-up
                data = bodies(payload, server.model, titles, abstracts)
                asyncio.run(run_load(port, server.path, data, min(WARMUP, len(data)), 4))
            for level in levels:
                n = max(level, int(REQUESTS[payload] * args.scale))
                for server, port, proc in running.values():
                    data = bodies(payload, server.model, titles, abstracts)
                    cpu_before = cpu_seconds(proc.pid)
                    seconds, samples = asyncio.run(run_load(port, server.path, data, n, level))
                    cpu = cpu_seconds(proc.pid) - cpu_before
                    result = Result(
                        server.name,
                        payload,
                        level,
                        len(samples),
                        len(samples) * texts_per_request,
                        seconds,
                        sum(status != 200 for _, status in samples),
                        cpu,
                        [ms for ms, _ in samples],
                    )
                    rows.append(result.row())
                    print(json.dumps(rows[-1]), flush=True)
    finally:
        for _, _, proc in running.values():
            stop(proc)
    print()
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
