"""docker/train_entrypoint.sh, run with a recording fake `dvc` on PATH: the git snapshot DVC experiments
need, the pull, `dvc exp run` with the -S overrides (whole pipeline or the train stage), the optional push."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cloud_helpers import REPO

FAKE_DVC = """#!/usr/bin/env bash
echo "dvc $*" >> "$DVC_LOG"
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    work = tmp_path / "app"
    work.mkdir()
    (work / "params.yaml").write_text("meta: {}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dvc").write_text(FAKE_DVC)
    (bin_dir / "dvc").chmod(0o755)
    return work


def run(work: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    log = work.parent / "dvc.log"
    full_env = {
        **os.environ,
        "PATH": f"{work.parent / 'bin'}:{os.environ['PATH']}",
        "DVC_LOG": str(log),
        "GIT_CONFIG_GLOBAL": "/dev/null",
        **env,
    }
    result = subprocess.run(
        ["bash", str(REPO / "docker" / "train_entrypoint.sh"), *args],
        cwd=work,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls


def test_repro_with_overrides_in_a_fresh_git_snapshot(workdir):
    result, calls = run(workdir, "repro", "-S", "meta.use_gcs=true", "-S", "train.epochs=2")
    assert result.returncode == 0, result.stderr
    assert calls == [
        "dvc pull --remote gcs --allow-missing",
        "dvc exp run -S meta.use_gcs=true -S train.epochs=2",
        "dvc metrics show",
    ]
    log = subprocess.run(["git", "log", "--format=%s"], cwd=workdir, capture_output=True, text=True)
    assert log.stdout.strip() == "image snapshot"


def test_train_stage_only_then_push_without_pull(workdir):
    result, calls = run(
        workdir, "train", "-S", "train.epochs=1", DVC_PULL="0", DVC_PUSH="1", DVC_REMOTE="local"
    )
    assert result.returncode == 0, result.stderr
    assert calls == ["dvc exp run -S train.epochs=1 train", "dvc metrics show", "dvc push --remote local"]


def test_other_commands_run_as_is(workdir):
    result, calls = run(workdir, "echo", "hello")
    assert result.returncode == 0 and result.stdout == "hello\n"
    assert calls == [] and not (workdir / ".git").exists()


def test_a_failing_step_stops_the_job(workdir):
    (workdir.parent / "bin" / "dvc").write_text(FAKE_DVC + '[[ "$1" == pull ]] && exit 3\nexit 0\n')
    result, calls = run(workdir, "repro")
    assert result.returncode == 3
    assert calls == ["dvc pull --remote gcs --allow-missing"]
