"""Pipeline scale: prepare, split, pairs and tfidf_baseline at 173k, 650k and 2.6M papers, seconds and peak RSS.

Builds a synthetic arXiv snapshot from the shared sample: the real papers copied as often as needed, each copy
with rewritten ids (``syn07.2401.01234``), texts and categories as they are (so copies share titles, which the
split keeps together as it does re-submissions). Each size runs the stages as the pipeline does (``python
stages/<stage>.py`` in a project folder whose params are the CPU profile's, reading that snapshot), one at a time,
and reports the wall time and the peak resident memory of each stage's process (``wait4``'s ``ru_maxrss``).
The params are the committed ``params.yaml`` (the CPU profile) with the snapshot's path.

    uv run python benchmarks/pipeline_scale.py                          # 173k, 650k, 2.6M
    uv run python benchmarks/pipeline_scale.py --sizes 20000,80000      # a quick check
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = ["prepare", "split", "pairs", "tfidf_baseline"]
SAMPLE = REPO.parent / "shared" / "data" / "arxiv-sample.jsonl.gz"
# The "id" key of a line (JSON escapes every quote inside a string, so `"id":` can only be a key).
ID_FIELD = re.compile(rb'("id"\s*:\s*)"')


def synthetic_snapshot(source: Path, n: int, out: Path) -> Path:
    """``n`` lines: the source's lines, then copies of them with rewritten ids, gzip level 1."""
    if out.exists():
        return out
    with gzip.open(source, "rb") as f:
        lines = [line.rstrip(b"\n") for line in f if line.strip()]
    tmp = out.with_suffix(".partial")
    with gzip.open(tmp, "wb", compresslevel=1) as f:
        written, copy = 0, 0
        while written < n:
            for line in lines[: n - written]:
                if copy:  # a byte edit of the id's value: re-serialising 2.4M records costs minutes
                    line = ID_FIELD.sub(rb'\1"syn%02d.' % copy, line, count=1)
                f.write(line + b"\n")
            written += min(len(lines), n - (written))
            copy += 1
    tmp.rename(out)
    return out


def run_stage(stage: str, project: Path) -> tuple[float, float, int]:
    """(seconds, peak RSS in MiB, exit code) of one stage's process."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "stages" / f"{stage}.py")],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0 and proc.stderr is not None:
        print(proc.stderr.read().decode(errors="replace")[-2000:], file=sys.stderr)
    return seconds, usage.ru_maxrss / 1024, code


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="173366,650000,2600000", help="papers per run")
    parser.add_argument(
        "--sample", default=str(SAMPLE), help="the real snapshot the synthetic one is built from"
    )
    parser.add_argument("--work", default="/tmp/pipeline-scale", help="snapshots and project folders")
    parser.add_argument("--stages", default=",".join(STAGES))
    args = parser.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    # The committed params.yaml is the CPU profile's composition; read as YAML, so this process stays small
    # (a child's ru_maxrss starts from its parent's resident size at fork).
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        start = time.perf_counter()
        snapshot = synthetic_snapshot(Path(args.sample), n, work / f"arxiv-{n}.jsonl.gz")
        print(
            f"{n} papers: snapshot {snapshot} ({snapshot.stat().st_size / 2**20:.0f} MiB, "
            f"{time.perf_counter() - start:.0f} s)",
            flush=True,
        )
        project = work / f"project-{n}"
        project.mkdir(exist_ok=True)
        run_params = json.loads(json.dumps(params))
        run_params["prepare"]["source"]["uri"] = str(snapshot)
        (project / "params.yaml").write_text(yaml.safe_dump(run_params, sort_keys=False))
        for stage in args.stages.split(","):
            seconds, rss, code = run_stage(stage, project)
            rows.append((n, stage, seconds, rss, code))
            print(f"  {stage:<15} {seconds:8.1f} s  {rss:8.0f} MiB peak RSS  exit {code}", flush=True)
            if code != 0:
                break
    print("\n| papers | stage | seconds | peak RSS (MiB) | s per 100k papers |")
    print("|---:|---|---:|---:|---:|")
    for n, stage, seconds, rss, code in rows:
        note = "" if code == 0 else f" (exit {code})"
        print(f"| {n:,} | {stage}{note} | {seconds:.1f} | {rss:,.0f} | {seconds / n * 1e5:.2f} |")


if __name__ == "__main__":
    main()
