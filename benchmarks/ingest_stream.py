"""Streaming ingest: peak memory and throughput of reading a multi-GB arXiv snapshot as ``prepare`` does.

Writes a synthetic snapshot in the arXiv JSON Lines schema of at least ``--gb`` GB on disk (plain or gzip)
in a temporary folder, then reads it in a fresh subprocess through ``iter_source_lines`` (the call
``prepare`` makes) and ``parse_record`` on every line (JSON parsing, cleaning, categories), keeping no rows,
and prints the peak RSS of that subprocess and rows/s. ``--via http`` serves the file from a loopback HTTP
server and reads the URL instead. The snapshot is deleted at the end.

    uv run python benchmarks/ingest_stream.py [--gb 2.1] [--format plain|gzip] [--via file|http]
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RSS_BUDGET = 1 << 30  # 1 GiB
CATEGORIES = ["cs.LG", "cs.CL stat.ML", "math.AG", "hep-th", "astro-ph.GA", "cond-mat.str-el", "q-bio.NC"]


def synthetic_records(seed: int) -> tuple[list[str], list[str]]:
    """A pool of titles and ~1,000-character abstracts from random words, larger than gzip's 32 KB window."""
    rng = random.Random(seed)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 11))) for _ in range(5000)]
    titles = [" ".join(rng.choices(words, k=rng.randint(5, 14))).capitalize() for _ in range(2000)]
    abstracts = ["  " + " ".join(rng.choices(words, k=150)) + ".\n" for _ in range(2000)]
    return titles, abstracts


def write_snapshot(path: Path, min_bytes: int, compress: bool, seed: int = 0) -> int:
    """Write rows until the file on disk holds ``min_bytes``; return the number of rows."""
    titles, abstracts = synthetic_records(seed)
    opener = functools.partial(gzip.open, compresslevel=1) if compress else open
    rows = 0
    with opener(path, "wb") as f:
        while path.stat().st_size < min_bytes:
            chunk = []
            for _ in range(10_000):
                i = rows % len(titles)
                row = {
                    "id": f"{2001 + rows // 100_000 % 99:04d}.{rows % 100_000:05d}",
                    "submitter": "A. Author",
                    "authors": "A. Author, B. Author",
                    "title": titles[i],
                    "comments": "12 pages",
                    "journal-ref": None,
                    "doi": None,
                    "report-no": None,
                    "categories": CATEGORIES[(rows * 7 + i) % len(CATEGORIES)],
                    "license": None,
                    "abstract": abstracts[(i * 31 + rows // 2000) % len(abstracts)],
                    "update_date": "2024-01-15",
                    "authors_parsed": [["Author", "A.", ""], ["Author", "B.", ""]],
                }
                chunk.append(json.dumps(row))
                rows += 1
            f.write(("\n".join(chunk) + "\n").encode())
            f.flush()
    return rows


def current_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def read(uri: str) -> dict[str, float]:
    """Stream ``uri`` as ``prepare`` does, in this process; return rows, seconds and memory figures."""
    sys.path.insert(0, str(REPO))
    from arxiv_embed.sources import SourceParams, iter_source_lines
    from stages.prepare import parse_record

    rss_before = current_rss()
    rows = kept = 0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work_dir:
        for line in iter_source_lines(SourceParams(kind="file", uri=uri), work_dir):
            rows += 1
            paper, _ = parse_record(line, 50)
            kept += paper is not None
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"rows": rows, "kept": kept, "seconds": seconds, "rss_after_imports": rss_before, "peak_rss": peak}


def serve_folder(folder: Path) -> tuple[ThreadingHTTPServer, str]:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--gb", type=float, default=2.1, help="size of the snapshot on disk, in GB (1e9 bytes)"
    )
    parser.add_argument("--format", choices=["plain", "gzip"], default="plain")
    parser.add_argument("--via", choices=["file", "http"], default="file")
    parser.add_argument("--tmp", default=None, help="folder for the snapshot (default: the system temp dir)")
    parser.add_argument("--read", help=argparse.SUPPRESS)  # internal: the measuring subprocess
    args = parser.parse_args()
    if args.read:
        print(json.dumps(read(args.read)))
        return

    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="ingest-bench-") as tmp:
        path = Path(tmp) / ("snapshot.jsonl.gz" if args.format == "gzip" else "snapshot.jsonl")
        start = time.perf_counter()
        written = write_snapshot(path, int(args.gb * 1e9), compress=args.format == "gzip")
        size = path.stat().st_size
        took = time.perf_counter() - start
        print(f"wrote {written:,} rows, {size / 1e9:.2f} GB {args.format} in {took:.0f} s")
        server = None
        uri = str(path)
        if args.via == "http":
            server, base = serve_folder(Path(tmp))
            uri = f"{base}/{path.name}"
        try:
            cmd = [sys.executable, __file__, "--read", uri]
            child = subprocess.run(cmd, capture_output=True, text=True)
            if child.returncode != 0:
                sys.exit(f"reading failed:\n{child.stderr[-3000:]}")
            result = json.loads(child.stdout)
        finally:
            if server is not None:
                server.shutdown()
    assert result["rows"] == written, f"read {result['rows']} rows of {written}"
    peak_mb = result["peak_rss"] / 2**20
    print(f"source          {args.via} ({uri.split('/')[-1]}, {size / 1e9:.2f} GB {args.format})")
    print(f"rows            {result['rows']:,} read, {result['kept']:,} valid papers")
    rate, mb_s = result["rows"] / result["seconds"], size / 1e6 / result["seconds"]
    print(f"throughput      {rate:,.0f} rows/s, {mb_s:.1f} MB/s ({result['seconds']:.0f} s)")
    base_mb = result["rss_after_imports"] / 2**20
    print(f"RSS             {base_mb:.0f} MiB after imports, peak {peak_mb:.0f} MiB")
    ok = result["peak_rss"] < RSS_BUDGET
    print(f"peak RSS {'within' if ok else 'OVER'} the 1 GiB budget")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
