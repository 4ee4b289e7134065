"""The MkDocs hooks' generated content (docs/hooks.py): metrics tables, endpoint table, benchmarks page."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_metrics_tables_render_every_file_sorted(hooks, tmp_path):
    (tmp_path / "b.json").write_text(json.dumps({"b_x": 0.123456, "b_n": 3}))
    (tmp_path / "a.json").write_text(json.dumps({"a_y": "text"}))
    assert hooks.metrics_tables(tmp_path) == (
        "### `metrics/a.json`\n\n| Metric | Value |\n| --- | --- |\n| `a_y` | text |\n\n"
        "### `metrics/b.json`\n\n| Metric | Value |\n| --- | --- |\n| `b_n` | 3 |\n| `b_x` | 0.1235 |"
    )


def test_metrics_tables_say_how_to_get_metrics_when_there_are_none(hooks, tmp_path):
    assert "dvc repro" in hooks.metrics_tables(tmp_path)


def test_endpoint_table(hooks):
    schema = {
        "paths": {
            "/health": {"get": {"summary": "Health"}},
            "/embed": {"post": {"description": "Embed texts.\nMore lines."}},
        }
    }
    assert hooks.endpoint_table(schema) == (
        "| Method | Path | Summary |\n| --- | --- | --- |\n"
        "| `POST` | `/embed` | Embed texts. |\n| `GET` | `/health` | Health |"
    )


def test_benchmarks_page_prefers_the_readme(hooks, tmp_path):
    (tmp_path / "load.py").write_text('"""Load test of the API.\n\nDetails."""\n')
    assert hooks.benchmarks_page(tmp_path).splitlines()[-1] == (
        "- `uv run python benchmarks/load.py`: Load test of the API."
    )
    (tmp_path / "README.md").write_text("# Benchmarks\n\nnumbers\n")
    assert hooks.benchmarks_page(tmp_path) == "# Benchmarks\n\nnumbers\n"
