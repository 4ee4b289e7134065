"""The real prepare and split stages with meta.use_gcs=true against the emulator: their outputs land in the
bucket under their data version, and a fresh checkout restores them instead of re-running."""

from __future__ import annotations

import gzip
import importlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
from cloud_helpers import REPO
from gcsfs.core import GCSFileSystem

from arxiv_embed.params import read_params
from arxiv_embed.storage import data_version, read_pipeline

pytestmark = pytest.mark.slow

SUBJECTS = ["cs.LG", "math.AP", "hep-th"]


def write_snapshot(path: Path) -> Path:
    """30 papers per subject in the arXiv snapshot schema."""
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for s, subject in enumerate(SUBJECTS):
            for i in range(30):
                paper = {
                    "id": f"24{s:02d}.{i:05d}v1",
                    "title": f"Paper {i} on {subject}",
                    "abstract": f"We study problem {i} of {subject} with a method that is long enough to keep.",
                    "categories": subject,
                    "update_date": "2024-01-01",
                }
                f.write(json.dumps(paper) + "\n")
    return path


def make_checkout(root: Path, snapshot: Path, bucket: str) -> Path:
    """What a clone holds: dvc.yaml, the stage scripts and the shared package, and params.yaml."""
    root.mkdir()
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "stages", root / "stages", ignore=ignore)
    shutil.copytree(REPO / "src" / "arxiv_embed", root / "src" / "arxiv_embed", ignore=ignore)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["prepare"]["source"].update({"kind": "file", "uri": str(snapshot)})
    params["prepare"]["min_papers_per_subject"] = 5
    params["meta"].update({"use_gcs": True, "gcs_bucket": bucket, "gcs_prefix": "snapshots"})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def run_stage(name: str) -> None:
    importlib.import_module(f"stages.{name}").main()


def test_stages_publish_to_and_restore_from_the_bucket(tmp_path, monkeypatch, capsys, gcs_env, bucket):
    snapshot = write_snapshot(tmp_path / "arxiv.jsonl.gz")
    first = make_checkout(tmp_path / "first", snapshot, bucket)
    monkeypatch.chdir(first)
    run_stage("prepare")
    run_stage("split")
    assert "outputs pushed to gs://" in capsys.readouterr().out

    params = read_params()
    stages = read_pipeline(params)
    fs = GCSFileSystem(token="anon", endpoint_url=gcs_env, skip_instance_cache=True)
    for stage, expected in {
        "prepare": ["data/prepared/papers.parquet", "metrics/prepare.json"],
        "split": [f"data/split/{s}.parquet" for s in ("test", "train", "val")] + ["metrics/split.json"],
    }.items():
        prefix = f"{bucket}/snapshots/{stage}/{data_version(stage, stages, params)}"
        assert sorted(p.removeprefix(prefix + "/") for p in fs.find(prefix)) == ["_manifest.json", *expected]
        for rel in expected:
            assert fs.cat_file(f"{prefix}/{rel}") == (first / rel).read_bytes()

    # A fresh checkout elsewhere (the raw snapshot at another path, same content): split is restored from the
    # bucket, and prepare is not needed at all.
    moved = shutil.copy(snapshot, tmp_path / "elsewhere.jsonl.gz")
    second = make_checkout(tmp_path / "second", Path(moved), bucket)
    monkeypatch.chdir(second)
    run_stage("split")
    assert "split: outputs restored from gs://" in capsys.readouterr().out
    assert not (second / "data" / "prepared").exists()
    for rel in ("data/split/train.parquet", "data/split/test.parquet", "metrics/split.json"):
        assert (second / rel).read_bytes() == (first / rel).read_bytes()
