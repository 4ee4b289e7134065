"""FAISS at full-arXiv scale: 2.6M synthetic 384-d vectors, flat / IVF-flat / IVF-SQ8 / IVF-PQ (+ SQ8) / HNSW.

Each index is built as ``stages/faiss_build.py`` builds it (:func:`new_index`, :func:`train_index` and the
``faiss_build`` settings), written to a scratch folder, and measured in a fresh subprocess: the index file's
bytes, the resident memory the loaded index adds to that process (RSS after ``faiss.read_index`` minus RSS
before), p50 / p99 latency of single queries on ONE thread (``faiss.omp_set_num_threads(1)``), and recall@10
against exact search, without a filter and with a subject filter (``SearchParameters(sel=IDSelectorBitmap)``)
for the subject nearest to 1% and to 10% of the vectors. Exact (filtered) top 10s come from a numpy
brute-force pass over all vectors, independent of faiss.

The vectors. Real embeddings are the seed: ``--base-embeddings`` (a parquet with ``embedding`` and
``subject`` columns, e.g. ``data/embeddings/train.parquet``, the adapter stage's papers) or ``--base-index``
with ``--base-meta`` (a flat ``index.faiss``, read back with ``reconstruct_n``, and its ``meta.parquet``).
Vector i of the 2.6M is ``normalise(b + s * n)``: ``b`` a base vector drawn uniformly (it keeps ``b``'s
subject, for the filters) and ``n`` Gaussian noise of unit expected norm, shaped like the base vectors'
covariance (``--noise-shape covariance``: the noise moves a copy along directions real papers vary in) or
isotropic. Queries are fresh noisy copies of random base vectors (not in the index). ``--noise`` (s) sets
how far copies stray from their base; the output reports the share of each query's exact top 10 that are
copies of its own base paper, so the neighbour structure is not just "the base's copies" (share near 1) or
noise (share near 0). Without a base the script draws random clustered bases (development only; it says so).

The coarse clusters (k-means on ``--train`` vectors) and the assignment of all vectors to them are computed
once and shared by the IVF indexes of the same ``ivf_nlist``; each IVF row's build time includes them (what a
build of that index alone costs). HNSW builds are slow on a small machine: ``--hnsw-n`` builds them on the
first n vectors only, with their own exact ground truth, and the table says which size each row has.

``--serve-models DIR`` also measures the API process (``python -m serve`` on ``DIR/onnx``, ``DIR/faiss``,
``DIR/classifier``) after a few /search and /classify requests: its RSS plus an index's delta is what a
Cloud Run instance holds. ``--serve-config NAME`` (with ``--papers``: the prepared papers, for titles and
abstracts) measures it on one of the built indexes instead, with a ``meta.arrow`` of all n papers (row i:
the record of vector i's base paper, under a unique id): the API as it would run on the full corpus,
memory-mapped metadata included, with its resident memory split into anonymous and file-backed pages.

    nice -n 19 uv run python benchmarks/search_scale.py --base-embeddings data/embeddings/train.parquet
    uv run python benchmarks/search_scale.py --n 200000 --hnsw-n 100000      # smaller, quicker
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serve.search import search_parameters
from stages.faiss_build import META_FILE, FaissBuildParams, new_index, paper_meta, train_index, write_meta

K = 10
CHUNK = 100_000
RSS_KEYS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")
FLAT_QUERIES = 20
DEFAULTS = FaissBuildParams(
    encoder="onnx",
    model_file="model_int8.onnx",
    index="flat",
    dimension=None,
    max_papers=None,
    batch_size=64,
    torch_batch_size=512,
    threads=None,
    ivf_nlist=4096,
    ivf_nprobe=16,
    pq_m=48,
    pq_bits=8,
    refine_k_factor=10,
    hnsw_m=32,
    hnsw_ef_construction=200,
    hnsw_ef_search=128,
    n_recall_queries=500,
)
# name -> (the faiss_build settings, search settings swept: nprobe for IVF, efSearch for HNSW)
CONFIGS: dict[str, tuple[FaissBuildParams, list[str]]] = {
    "flat": (DEFAULTS, ["-"]),
    "ivf_flat": (dataclasses.replace(DEFAULTS, index="ivf"), ["16", "64"]),
    "ivf_sq8": (dataclasses.replace(DEFAULTS, index="ivf_sq8"), ["16", "32", "64", "128", "256"]),
    "ivf_pq48": (dataclasses.replace(DEFAULTS, index="ivf_pq", pq_m=48), ["32", "128"]),
    "ivf_pq96": (dataclasses.replace(DEFAULTS, index="ivf_pq", pq_m=96), ["32", "128"]),
    # 4-bit fast-scan PQ finds k x refine_k_factor candidates, SQ8 codes re-rank them
    "ivf_pq96_sq8": (dataclasses.replace(DEFAULTS, index="ivf_pq_sq8", pq_m=96), ["64", "128", "192", "256"]),
    "ivf_pq192_sq8": (
        dataclasses.replace(DEFAULTS, index="ivf_pq_sq8", pq_m=192),
        ["64", "128", "192", "256"],
    ),
    "hnsw": (dataclasses.replace(DEFAULTS, index="hnsw"), ["64", "128", "256"]),
    "hnsw_sq8": (dataclasses.replace(DEFAULTS, index="hnsw_sq8"), ["64", "128", "256"]),
}


# ---------------------------------------------------------------------------------------------------------
# The vectors


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def load_base(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str]:
    """Base vectors (m x d, unit norm), their subjects, their paper ids (when known), and a description."""
    if args.base_embeddings:
        table = pd.read_parquet(args.base_embeddings, columns=["id", "embedding", "subject"])
        vectors = normalise(np.stack(table["embedding"].to_numpy()).astype(np.float32))
        described = f"{len(table)} embeddings of {args.base_embeddings}"
        return vectors, table["subject"].to_numpy(), table["id"].to_numpy(), described
    if args.base_index:
        index = faiss.read_index(args.base_index)
        vectors = normalise(index.reconstruct_n(0, index.ntotal))
        meta = pd.read_parquet(args.base_meta, columns=["id", "subject"])
        return (
            vectors,
            meta["subject"].to_numpy(),
            meta["id"].to_numpy(),
            f"{index.ntotal} vectors of {args.base_index}",
        )
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((60, 384)).astype(np.float32)
    labels = rng.zipf(1.6, 20_000) % 60
    vectors = normalise(centres[labels] + 0.8 * rng.standard_normal((20_000, 384)).astype(np.float32))
    return vectors, np.array([f"s{i}" for i in labels]), None, "random clustered bases (development only)"


class Noise:
    """Gaussian noise of unit expected norm: isotropic, or shaped by the base vectors' covariance."""

    def __init__(self, base: np.ndarray, shape: str) -> None:
        d = base.shape[1]
        if shape == "isotropic":
            self.factor = np.eye(d, dtype=np.float32) / math.sqrt(d)
        else:
            cov = np.cov(base, rowvar=False).astype(np.float64)
            values, vectors = np.linalg.eigh(cov)
            root = vectors * np.sqrt(np.clip(values, 0, None))  # root @ root.T = cov
            self.factor = (root / math.sqrt(np.trace(cov))).T.astype(np.float32)

    def __call__(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.standard_normal((n, self.factor.shape[0]), dtype=np.float32) @ self.factor


def noisy_copies(
    base: np.ndarray, noise: Noise, scale: float, rng: np.random.Generator, n: int
) -> tuple[np.ndarray, np.ndarray]:
    source = rng.integers(len(base), size=n)
    return normalise(base[source] + scale * noise(rng, n)), source


def write_vectors(path: Path, n: int, base: np.ndarray, noise: Noise, args: argparse.Namespace) -> np.ndarray:
    """The n vectors as a float32 file (chunk c drawn with seed (seed, c)); returns each one's base index."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, base.shape[1]))
    sources = np.empty(n, dtype=np.int64)
    for c, start in enumerate(range(0, n, CHUNK)):
        stop = min(start + CHUNK, n)
        rng = np.random.default_rng([args.seed, c])
        out[start:stop], sources[start:stop] = noisy_copies(base, noise, args.noise, rng, stop - start)
    out.flush()
    del out
    return sources


def chunks(vectors: np.ndarray, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    n = len(vectors) if stop is None else stop
    for start in range(0, n, CHUNK):
        yield start, np.ascontiguousarray(vectors[start : min(start + CHUNK, n)])


# ---------------------------------------------------------------------------------------------------------
# Exact top k (numpy)


class TopK:
    """Running exact top k of each query over chunks of candidates."""

    def __init__(self, n_queries: int) -> None:
        self.scores = np.full((n_queries, K), -np.inf, dtype=np.float32)
        self.ids = np.full((n_queries, K), -1, dtype=np.int64)

    def update(self, scores: np.ndarray, ids: np.ndarray) -> None:
        if scores.shape[1] == 0:
            return
        if scores.shape[1] > K:
            part = np.argpartition(-scores, K - 1, axis=1)[:, :K]
            scores, ids = np.take_along_axis(scores, part, axis=1), ids[part]
        both_scores = np.concatenate([self.scores, scores], axis=1)
        both_ids = np.concatenate([self.ids, np.broadcast_to(ids, scores.shape)], axis=1)
        best = np.argsort(-both_scores, axis=1, kind="stable")[:, :K]
        self.scores = np.take_along_axis(both_scores, best, axis=1)
        self.ids = np.take_along_axis(both_ids, best, axis=1)


def exact_top_k(
    vectors: np.ndarray, queries: np.ndarray, masks: dict[str, np.ndarray], sizes: list[int]
) -> dict[tuple[int, str], np.ndarray]:
    """(index size, filter) -> exact top-k ids of each query among the first ``size`` vectors passing it."""
    tops = {(size, name): TopK(len(queries)) for size in sizes for name in masks}
    for start, chunk in chunks(vectors):
        scores = queries @ chunk.T
        ids = np.arange(start, start + len(chunk))
        for (size, name), top in tops.items():
            keep = masks[name][start : start + len(chunk)] & (ids < size)
            top.update(scores[:, keep], ids[keep])
    return {key: top.ids for key, top in tops.items()}


# ---------------------------------------------------------------------------------------------------------
# Building


@dataclasses.dataclass
class Coarse:
    """IVF clusters trained once and every vector's cluster, shared by the IVF indexes."""

    centroids: np.ndarray
    assign: np.ndarray
    seconds: float


def coarse_clusters(vectors: np.ndarray, params: FaissBuildParams, n_train: int) -> Coarse:
    start = time.perf_counter()
    ivf = new_index(vectors.shape[1], dataclasses.replace(params, index="ivf"))
    train_index(ivf, np.ascontiguousarray(vectors[:n_train]), params)
    quantizer = faiss.extract_index_ivf(ivf).quantizer
    assign = np.empty(len(vectors), dtype=np.int64)
    for offset, chunk in chunks(vectors):
        assign[offset : offset + len(chunk)] = quantizer.search(chunk, 1)[1][:, 0]
    centroids = quantizer.reconstruct_n(0, quantizer.ntotal)
    return Coarse(centroids, assign, time.perf_counter() - start)


def build(
    vectors: np.ndarray, params: FaissBuildParams, n: int, n_train: int, coarse: Coarse | None
) -> tuple[faiss.Index, float]:
    """The index of the first n vectors, as faiss_build makes it; seconds (with the shared clusters')."""
    start = time.perf_counter()
    index = new_index(vectors.shape[1], params)
    if coarse is None:
        train_index(index, np.ascontiguousarray(vectors[:n_train]), params)
        for _, chunk in chunks(vectors, n):
            index.add(chunk)
        return index, time.perf_counter() - start
    ivf = faiss.extract_index_ivf(index)
    ivf.quantizer.add(coarse.centroids)  # a filled quantizer: train() skips k-means, trains the codes only
    train_index(index, np.ascontiguousarray(vectors[:n_train]), params)
    if isinstance(index, faiss.IndexRefine):  # add() fills both code sets (the assignment is searched again)
        for _, chunk in chunks(vectors, n):
            index.add(chunk)
        return index, time.perf_counter() - start + coarse.seconds
    for offset, chunk in chunks(vectors, n):
        assign = np.ascontiguousarray(coarse.assign[offset : offset + len(chunk)])
        index.add_core(len(chunk), faiss.swig_ptr(chunk), None, faiss.swig_ptr(assign))
    return index, time.perf_counter() - start + coarse.seconds


# ---------------------------------------------------------------------------------------------------------
# Measuring (in a fresh process)


def rss_bytes(pid: str = "self") -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def apply_setting(index: faiss.Index, setting: str) -> None:
    """Set ``index``'s search setting: nprobe (IVF) or efSearch (HNSW); ``nprobe/k_factor`` for an IVF-PQ index
    re-ranked by SQ8 (the k_factor part optional). The API then searches it with these settings."""
    if isinstance(index, faiss.IndexRefine):
        nprobe, _, k_factor = setting.partition("/")
        if k_factor:
            index.k_factor = float(k_factor)
        apply_setting(faiss.downcast_index(index.base_index), nprobe)
    elif isinstance(index, faiss.IndexIVF):
        index.nprobe = int(setting)
    elif isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = int(setting)


def measure(index_file: str, data_file: str, settings: list[str], size: int) -> list[dict[str, object]]:
    """In this (fresh) process: RSS the loaded index adds, then latency and recall per setting and filter."""
    faiss.omp_set_num_threads(1)
    data = dict(np.load(data_file))
    queries = data["queries"]
    filters = [str(name) for name in data["filters"]]
    before = rss_bytes()
    index = faiss.read_index(index_file)
    rss = rss_bytes() - before
    bitmaps = {name: np.ascontiguousarray(data[f"bitmap_{name}"]) for name in filters if name != "none"}
    selectors = {
        name: faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits)) for name, bits in bitmaps.items()
    }
    rows = []
    for setting in settings:
        apply_setting(index, setting)
        for name in filters:
            params = search_parameters(index, selectors.get(name), K)  # as the API searches
            truth = data[f"truth_{size}_{name}"]
            for q in queries[:5]:  # warm up
                index.search(q[None], K, params=params)
            found, times = [], []
            # An exact scan of millions of vectors per query: a few queries give its (steady) latency.
            timed = queries[:FLAT_QUERIES] if isinstance(index, faiss.IndexFlat) else queries
            cpu = []
            for q in timed:
                start, start_cpu = time.perf_counter(), time.thread_time()
                _, ids = index.search(q[None], K, params=params)
                times.append(time.perf_counter() - start)
                cpu.append(time.thread_time() - start_cpu)  # this thread's CPU: immune to other processes
                found.append(ids[0])
            hits = [len(set(f) & set(t)) / K for f, t in zip(found, truth[: len(timed)], strict=True)]
            rows.append(
                {
                    "setting": setting,
                    "filter": name,
                    "p50_ms": 1000 * float(np.percentile(times, 50)),
                    "p99_ms": 1000 * float(np.percentile(times, 99)),
                    "cpu_p50_ms": 1000 * float(np.percentile(cpu, 50)),
                    "cpu_p99_ms": 1000 * float(np.percentile(cpu, 99)),
                    "recall@10": float(np.mean(hits)),
                    "queries": len(timed),
                    "short": float(np.mean([(f < 0).any() for f in found])),
                    "rss_bytes": rss,
                }
            )
    return rows


def measure_in_subprocess(index_file: Path, data_file: Path, settings: list[str], size: int) -> list[dict]:
    command = [sys.executable, __file__, "--measure", str(index_file), "--data", str(data_file)]
    command += ["--settings", ",".join(map(str, settings)), "--size", str(size)]
    out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def full_meta(index_dir: Path, sources: np.ndarray, base_ids: np.ndarray, papers_file: Path) -> float:
    """``index_dir/meta.arrow`` of one row per vector: its base paper's record (``faiss_build.paper_meta``),
    under the id ``<base id>.<row>`` so that every id is unique; returns the file's bytes."""
    papers = pd.read_parquet(papers_file).set_index("id").loc[base_ids].reset_index()
    records = paper_meta(papers)
    rows = records.take(sources)
    ids = (
        pd.Series(rows.column("id").to_numpy(zero_copy_only=False))
        + "."
        + pd.Series(range(len(rows))).astype(str)
    )
    rows = rows.set_column(0, "id", pa.array(ids, pa.string()))
    write_meta(rows, index_dir)
    return (index_dir / META_FILE).stat().st_size


def serve_rss(models: Path, index_dir: Path | None = None, subject: str | None = None) -> dict[str, float]:
    """RSS of ``python -m serve`` on ``models`` (or its model and classifier with ``index_dir``) after a few
    requests: VmRSS, VmHWM, RssAnon and RssFile in bytes, and the p50 of /search (text, then with a
    ``subject`` filter) and /classify in ms."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PORT=str(port), ARXIV_EMBED_HOST="127.0.0.1")
    env.update(
        ARXIV_EMBED_MODEL_DIR=str(models / "onnx"),
        ARXIV_EMBED_INDEX_DIR=str(index_dir or models / "faiss"),
        ARXIV_EMBED_CLASSIFIER_DIR=str(models / "classifier"),
    )
    root = Path(__file__).resolve().parents[1]
    server = subprocess.Popen([sys.executable, "-m", "serve"], cwd=root, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("serve did not become healthy")
        text = "Graph neural networks for molecular property prediction with attention " * 8
        bodies = {"search": {"text": text}, "classify": {"text": text}}
        if subject:
            bodies["search_filtered"] = {"text": text, "filters": {"subjects": [subject]}}
        times: dict[str, list[float]] = {name: [] for name in bodies}
        for _ in range(10):
            for name, body in bodies.items():
                path = "/" + name.split("_")[0]
                request = urllib.request.Request(
                    url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
                )
                start = time.perf_counter()
                urllib.request.urlopen(request, timeout=30).read()
                times[name].append(1000 * (time.perf_counter() - start))
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{server.pid}/status").read_text().splitlines()
        )
        rss: dict[str, float] = {key: int(status[key].split()[0]) * 1024 for key in RSS_KEYS}
        return rss | {f"{name}_p50_ms": float(np.median(t)) for name, t in times.items()}
    finally:
        server.terminate()
        server.wait(timeout=30)


# ---------------------------------------------------------------------------------------------------------
# Driver


def pick_filters(subjects: np.ndarray, targets: tuple[float, ...] = (0.01, 0.10)) -> dict[str, np.ndarray]:
    """For each target share, the subject, or whole archive (``math`` = every ``math.*``), nearest to it."""
    archives = np.array([s.split(".")[0] for s in pd.unique(subjects)])
    archive_of = dict(zip(pd.unique(subjects), archives, strict=True))
    by_subject = pd.Series(subjects).value_counts(normalize=True)
    by_archive = pd.Series(subjects).map(archive_of).value_counts(normalize=True)
    shares = pd.concat([by_subject, by_archive.rename(lambda a: f"{a}.*")])
    shares = shares[~shares.index.duplicated()]
    picked = {}
    for target in targets:
        name = str((shares - target).abs().idxmin())
        if name.endswith(".*"):
            picked[name] = np.array([archive_of[s] for s in subjects]) == name[:-2]
        else:
            picked[name] = subjects == name
    return picked


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2_600_000, help="vectors in each index")
    parser.add_argument("--hnsw-n", type=int, default=260_000, help="vectors in the HNSW index (slow build)")
    parser.add_argument("--queries", type=int, default=200, help="held-out queries (exact top 10s by numpy)")
    parser.add_argument("--train", type=int, default=4096 * 40, help="training vectors (IVF, SQ, PQ)")
    parser.add_argument("--nlist", type=int, default=DEFAULTS.ivf_nlist, help="ivf_nlist of the IVF indexes")
    parser.add_argument("--nprobe", help="nprobe values swept for the IVF indexes (e.g. 64,128,256)")
    parser.add_argument(
        "--k-factors", default=str(DEFAULTS.refine_k_factor), help="refine k_factors swept (ivf_pq*_sq8)"
    )
    parser.add_argument("--threads", type=int, default=1, help="faiss threads while building")
    parser.add_argument("--noise", type=float, default=0.5, help="noise norm relative to a unit base vector")
    parser.add_argument("--noise-shape", choices=["covariance", "isotropic"], default="covariance")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"some of {','.join(CONFIGS)}")
    parser.add_argument("--base-embeddings", help="parquet with embedding and subject columns")
    parser.add_argument("--base-index", help="a flat index.faiss of real vectors (with --base-meta)")
    parser.add_argument("--base-meta", help="its meta.parquet (subject column)")
    parser.add_argument("--serve-models", type=Path, help="a models/ folder: measure python -m serve on it")
    parser.add_argument("--serve-only", action="store_true", help="only measure --serve-models")
    parser.add_argument("--serve-config", help="measure the API on this built index (with --serve-models)")
    parser.add_argument("--serve-nprobe", type=int, help="the nprobe the served IVF index keeps")
    parser.add_argument("--serve-k-factor", type=int, help="the k_factor the served ivf_pq*_sq8 index keeps")
    parser.add_argument("--papers", type=Path, help="prepared papers (titles, abstracts) for --serve-config")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one, deleted)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        settings = args.settings.split(",")
        print(json.dumps(measure(args.measure, args.data, settings, args.size)))
        return
    if args.serve_only:
        print_serve(serve_rss(args.serve_models))
        return
    if args.serve_config and not (args.serve_models and args.papers and args.base_embeddings):
        parser.error("--serve-config needs --serve-models, --papers and --base-embeddings")
    configs = args.configs.split(",")
    unknown = {c.split("@")[0] for c in configs} - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configs {sorted(unknown)}; choose from {', '.join(CONFIGS)}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="search_scale_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        run(args, configs, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir)


def run(args: argparse.Namespace, configs: list[str], workdir: Path) -> None:
    hnsw_n = min(args.hnsw_n, args.n)
    faiss.omp_set_num_threads(args.threads)
    base, base_subjects, base_ids, described = load_base(args)
    noise = Noise(base, args.noise_shape)
    print(f"base: {described}; noise {args.noise} ({args.noise_shape}); {args.n:,} vectors", flush=True)

    start = time.perf_counter()
    sources = write_vectors(workdir / "vectors.npy", args.n, base, noise, args)
    vectors = np.load(workdir / "vectors.npy", mmap_mode="r")
    queries, query_sources = noisy_copies(
        base, noise, args.noise, np.random.default_rng([args.seed, 2**31]), args.queries
    )
    subjects = base_subjects[sources]
    masks = {"none": np.ones(args.n, dtype=bool)} | pick_filters(subjects)
    picked = {f"{mask.mean():.1%}": name for name, mask in masks.items() if name != "none"}
    for share, name in picked.items():
        print(f"filter {name}: {share} of the vectors", flush=True)
    sizes = sorted({args.n, hnsw_n})
    truth = exact_top_k(vectors, queries, masks, sizes)
    own = np.mean(sources[truth[(args.n, "none")]] == query_sources[:, None])
    cos = np.mean([queries[i] @ vectors[truth[(args.n, "none")][i, K - 1]] for i in range(len(queries))])
    print(
        f"vectors and exact top 10s: {time.perf_counter() - start:.0f} s; share of a query's exact top 10 "
        f"that are copies of its own base paper: {own:.2f}; mean cosine of the 10th neighbour: {cos:.3f}",
        flush=True,
    )
    data = {"queries": queries, "filters": np.array(list(masks))}
    data |= {
        f"bitmap_{name}": np.packbits(mask, bitorder="little")
        for name, mask in masks.items()
        if name != "none"
    }
    data |= {f"truth_{size}_{name}": ids for (size, name), ids in truth.items()}
    np.savez(workdir / "data.npz", **data)

    serve = serve_rss(args.serve_models) if args.serve_models else None
    if serve:
        print_serve(serve)

    coarse: dict[int, Coarse] = {}
    rows = []
    for name in configs:
        kind, _, nlist = name.partition("@")  # ivf_sq8@8192: that index with ivf_nlist = 8192
        params, settings = CONFIGS[kind]
        params = dataclasses.replace(params, ivf_nlist=int(nlist or args.nlist))
        if args.nprobe and params.index.startswith("ivf"):
            settings = args.nprobe.split(",")
        if params.index == "ivf_pq_sq8":  # candidates re-ranked: k x k_factor of them
            settings = [f"{n}/{k}" for n in settings for k in args.k_factors.split(",")]
        size = hnsw_n if params.index.startswith("hnsw") else args.n
        shared = None
        if params.index.startswith("ivf"):
            if params.ivf_nlist not in coarse:
                coarse[params.ivf_nlist] = coarse_clusters(vectors, params, args.train)
                print(
                    f"IVF{params.ivf_nlist} clusters and assignment: {coarse[params.ivf_nlist].seconds:.0f} s"
                )
            shared = coarse[params.ivf_nlist]
        index, seconds = build(vectors, params, size, args.train, shared)
        index_file = workdir / f"{name.replace('@', '_')}.faiss"
        faiss.write_index(index, str(index_file))
        if name == args.serve_config:
            serve_index(args, index, workdir, sources, base_ids, picked)
        del index
        print(f"{name}: built in {seconds:.0f} s, {mib(index_file.stat().st_size)} MiB", flush=True)
        for row in measure_in_subprocess(index_file, workdir / "data.npz", settings, size):
            row |= {
                "index": name if "@" in name or not name.startswith("ivf") else f"{name}@{args.nlist}",
                "n": size,
                "build_s": seconds,
                "file_bytes": index_file.stat().st_size,
            }
            if serve:
                row["serve_plus_index_bytes"] = serve["VmRSS"] + row["rss_bytes"]
            rows.append(row)
            print_row(row)
        index_file.unlink()
    print_table(rows, picked)
    if args.json:
        args.json.write_text(json.dumps({"picked": picked, "serve": serve, "rows": rows}, indent=1))


def serve_index(
    args: argparse.Namespace,
    index: faiss.Index,
    workdir: Path,
    sources: np.ndarray,
    base_ids: np.ndarray,
    picked: dict[str, str],
) -> None:
    """The API on ``index`` (with ``--serve-nprobe``) and a ``meta.arrow`` of all its papers: RSS, latency."""
    folder = workdir / "serve_index"
    folder.mkdir(exist_ok=True)
    if args.serve_nprobe:
        faiss.extract_index_ivf(index).nprobe = args.serve_nprobe
    if args.serve_k_factor:
        index.k_factor = args.serve_k_factor
    faiss.write_index(index, str(folder / "index.faiss"))
    start = time.perf_counter()
    size = full_meta(folder, sources[: index.ntotal], base_ids, args.papers)
    print(f"meta.arrow of {index.ntotal:,} papers: {mib(size)} MiB in {time.perf_counter() - start:.0f} s")
    rare = next(iter(picked.values()))  # the ~1% filter (a single subject or an archive)
    subject = rare if not rare.endswith(".*") else None
    print(f"on {args.serve_config} (nprobe {args.serve_nprobe}, k_factor {args.serve_k_factor}):", end=" ")
    print_serve(serve_rss(args.serve_models, folder, subject))
    shutil.rmtree(folder)


def print_serve(serve: dict[str, float]) -> None:
    sizes = ", ".join(f"{key} {mib(serve[key])} MiB" for key in RSS_KEYS)
    times = ", ".join(f"{key} {value:.1f}" for key, value in serve.items() if key.endswith("_ms"))
    print(f"python -m serve: {sizes}; {times}", flush=True)


def print_row(row: dict) -> None:
    print(
        f"  {row['index']} setting {row['setting']} filter {row['filter']}: p50 {row['p50_ms']:.2f} ms, "
        f"p99 {row['p99_ms']:.2f} ms, CPU p50 {row['cpu_p50_ms']:.2f} ms, recall@10 {row['recall@10']:.3f}",
        flush=True,
    )


def print_table(rows: list[dict], picked: dict[str, str]) -> None:
    names = {name: f"{name} ({share})" for share, name in picked.items()}
    serve = "serve_plus_index_bytes" in rows[0] if rows else False
    head = ["index", "vectors", "nprobe/ef", "filter", "build s", "file MiB", "RSS MiB"]
    head += ["+ serve MiB"] if serve else []
    head += ["queries", "p50 ms", "p99 ms", "CPU p50 ms", "CPU p99 ms", "recall@10", "short"]
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        cells = [r["index"], f"{r['n']:,}", str(r["setting"]), names.get(r["filter"], r["filter"])]
        cells += [f"{r['build_s']:.0f}", mib(r["file_bytes"]), mib(r["rss_bytes"])]
        cells += [mib(r["serve_plus_index_bytes"])] if serve else []
        cells += [
            str(r["queries"]),
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['cpu_p50_ms']:.2f}",
            f"{r['cpu_p99_ms']:.2f}",
            f"{r['recall@10']:.3f}",
            f"{r['short']:.0%}",
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
