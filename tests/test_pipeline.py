"""End to end: ``dvc repro`` of the whole DAG in a temporary copy of the repository, on a tiny generated snapshot.

Then a second ``dvc repro`` must run nothing.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pipeline_helpers import REPO, make_papers, tiny_params, write_snapshot

pytestmark = pytest.mark.slow

METRICS = [
    "prepare",
    "split",
    "pairs",
    "tfidf_baseline",
    "train",
    "ir_eval",
    "logreg",
    "onnx_export",
    "faiss_build",
]


def copy_repository(dst: Path) -> Path:
    """The working tree's files that git tracks or would track (not ignored), in a fresh git repository.

    Untracked files are included so that work in progress in the shared tree is tested as it will be committed.
    """
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        src = REPO / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dst, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "copy"], cwd=dst, check=True)
    return dst


def pipeline_params(snapshot: Path) -> dict:
    """Tiny sizes for every stage of dvc.yaml, the ONNX and FAISS stages included."""
    params = tiny_params(snapshot)
    params["meta"]["max_seq_length"] = 64
    params["train"].update(max_steps=2, batch_size=4, eval_steps=1)
    params["onnx_export"].update(n_parity_texts=16, batch_size=8, max_precision_drop_int8=0.2)
    params["faiss_build"].update(batch_size=16, n_recall_queries=10, threads=1)
    return params


def dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",  # stage commands run `python` of this venv
        "PYTHONPATH": str(root / "src"),  # the copy's package, not the repository's
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "DVC_NO_ANALYTICS": "1",
    }
    return subprocess.run(
        [str(bin_dir / "dvc"), *args], cwd=root, env=env, capture_output=True, text=True, timeout=1200
    )


@pytest.mark.timeout(1500)
def test_dvc_repro_end_to_end_then_nothing_to_do(tmp_path: Path) -> None:
    root = copy_repository(tmp_path / "repo")
    snapshot = write_snapshot(tmp_path / "arxiv.jsonl.gz", make_papers(per_subject=24))
    (root / "params.yaml").write_text(yaml.safe_dump(pipeline_params(snapshot), sort_keys=False))

    first = dvc(root, "repro")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    for stage in METRICS:
        assert f"Running stage '{stage}'" in first.stdout, stage
        metrics = json.loads((root / "metrics" / f"{stage}.json").read_text())
        assert metrics, stage
        for key, value in metrics.items():
            assert isinstance(value, int | float) and math.isfinite(value), (stage, key, value)
    assert (root / "dvc.lock").is_file()
    assert (root / "models" / "finetuned" / "modules.json").is_file()
    assert (root / "plots" / "ir_eval_per_subject.csv").is_file()

    second = dvc(root, "repro")
    assert second.returncode == 0, second.stderr[-4000:]
    assert "Running stage" not in second.stdout, second.stdout
    assert "up to date" in second.stdout.lower()

    status = dvc(root, "status")
    assert status.returncode == 0 and "up to date" in status.stdout.lower(), status.stdout
