"""The DVC `gcs` remote of .dvc/config against a real GCS API (gcp-storage-emulator): push, pull into a clean
clone, and clear, bounded failures for a missing bucket or missing credentials."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from cloud_helpers import REPO, run_tool

pytestmark = pytest.mark.slow

STAGE_SCRIPT = """\
import json, pathlib, random
rng = random.Random(7)
out = pathlib.Path("data/out")
(out / "nested").mkdir(parents=True, exist_ok=True)
(out / "blob.bin").write_bytes(bytes(rng.randrange(256) for _ in range(50_000)))
(out / "nested" / "rows.jsonl").write_text("".join(json.dumps({"i": i}) + "\\n" for i in range(100)))
pathlib.Path("data/single.txt").write_text("one file out\\n")
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True, capture_output=True
    )


def dvc(repo: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = run_tool("dvc", *args, cwd=repo)
    if ok:
        assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def use_emulator(repo: Path, endpoint: str, bucket: str) -> None:
    """Local (uncommitted) overrides of the committed `gcs` remote: the emulator and a test bucket.
    Written as `dvc remote modify --local gcs ...` would (each dvc start costs seconds)."""
    (repo / ".dvc" / "config.local").write_text(
        f"['remote \"gcs\"']\n    url = gs://{bucket}/dvc\n    endpointurl = {endpoint}\n"
        "    allow_anonymous_login = true\n"
    )


def make_repo(path: Path) -> Path:
    """A git+dvc repository with the project's .dvc/config and a one-stage pipeline with file and dir outs."""
    path.mkdir()
    git(path, "init", "-q")
    (path / ".dvc").mkdir()  # what `dvc init` makes, with the project's config
    for name in ("config", ".gitignore"):
        (path / ".dvc" / name).write_text((REPO / ".dvc" / name).read_text())
    (path / "make_data.py").write_text(STAGE_SCRIPT)
    (path / "dvc.yaml").write_text(
        "stages:\n  make:\n    cmd: python make_data.py\n    deps: [make_data.py]\n"
        "    outs: [data/out, data/single.txt]\n"
    )
    return path


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_committed_remotes():
    result = dvc(REPO, "config", "--list", "--project")
    config = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert config["remote.gcs.url"] == "gs://arxiv-embed/dvc"
    assert config["core.remote"] == "local"
    assert "remote.local.url" in config


def test_push_then_pull_into_a_clean_clone_is_byte_identical(tmp_path, gcs_env, bucket):
    repo = make_repo(tmp_path / "repo")
    use_emulator(repo, gcs_env, bucket)
    dvc(repo, "repro", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "pipeline")
    pushed = dvc(repo, "push", "--remote", "gcs")
    assert "pushed" in pushed.stdout

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    assert not (clone / "data" / "out").exists()
    use_emulator(clone, gcs_env, bucket)
    dvc(clone, "pull", "--remote", "gcs")

    original = snapshot(repo / "data")
    assert set(original) == {".gitignore", "out/blob.bin", "out/nested/rows.jsonl", "single.txt"}
    assert snapshot(clone / "data") == original
    assert "in sync" in dvc(clone, "status", "--cloud", "--remote", "gcs").stdout


def test_push_to_a_missing_bucket_fails_fast(tmp_path, gcs_env):
    repo = make_repo(tmp_path / "repo")
    use_emulator(repo, gcs_env, "no-such-bucket")
    dvc(repo, "repro", "-q")
    start = time.monotonic()
    result = dvc(repo, "push", "--remote", "gcs", ok=False)
    assert result.returncode != 0
    assert "no-such-bucket" in result.stderr
    assert time.monotonic() - start < 60
