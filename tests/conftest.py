"""Shared fixtures: a tiny generated arXiv snapshot and a project folder whose params run in seconds on a CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from pipeline_helpers import make_papers, run_stages, tiny_params, write_snapshot

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def tiny_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with a tiny snapshot and params.yaml; the test runs inside it."""
    snapshot = write_snapshot(tmp_path / "arxiv.jsonl.gz", make_papers())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(snapshot), sort_keys=False))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project run through prepare -> split -> pairs -> train -> adapter once per session (read-only)."""
    root = tmp_path_factory.mktemp("trained")
    snapshot = write_snapshot(root / "arxiv.jsonl.gz", make_papers())
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(snapshot), sort_keys=False))
    cwd = Path.cwd()
    os.chdir(root)
    try:
        run_stages("prepare", "split", "pairs", "train", "adapter")
    finally:
        os.chdir(cwd)
    return root
