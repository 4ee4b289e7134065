"""Fixtures of the cloud/CI tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from cloud_helpers import REPO


@pytest.fixture
def broken_copy(tmp_path: Path):
    """Write a copy of a repo file with one text replacement applied, asserting the replacement happened."""

    def make(rel_path: str, old: str, new: str, name: str | None = None) -> Path:
        text = (REPO / rel_path).read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in {rel_path}"
        out = tmp_path / (name or Path(rel_path).name)
        out.write_text(text.replace(old, new, 1), encoding="utf-8")
        return out

    return make
