"""MkDocs hooks: content generated from the repository at build time, so the site cannot drift from the code.

Markers in the pages are replaced by:

* ``<!-- dvc-dag -->``: the pipeline graph, ``dvc dag --md``;
* ``<!-- openapi-endpoints -->``: a table of the API's endpoints, from ``serve.app.create_app(...).openapi()``,
  whose full schema is also published as ``openapi.json``;
* ``<!-- metrics-tables -->``: one table per ``metrics/*.json`` file the pipeline wrote.

``benchmarks/README.md`` is published as ``benchmarks.md`` (without it, a list of the benchmark scripts). A
failure stops the (strict) build with its reason.
"""

from __future__ import annotations

import ast
import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def dvc_dag() -> str:
    if not (ROOT / "dvc.yaml").exists():
        raise PluginError("docs: dvc.yaml not found, cannot render the pipeline graph")
    dvc = Path(sys.executable).parent / "dvc"
    try:
        result = subprocess.run(
            [str(dvc), "dag", "--md"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True
        )
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", "") or ""
        raise PluginError(f"docs: `dvc dag --md` failed: {e} {detail}") from e
    return result.stdout


@functools.cache
def openapi() -> dict[str, Any]:
    try:
        from serve.app import create_app
        from serve.settings import Settings
    except ImportError as e:
        raise PluginError(f"docs: cannot import the API to render its OpenAPI schema: {e}") from e
    return create_app(Settings()).openapi()


def endpoint_table(schema: dict[str, Any]) -> str:
    rows = ["| Method | Path | Summary |", "| --- | --- | --- |"]
    for path, operations in sorted(schema.get("paths", {}).items()):
        for method, op in operations.items():
            summary = (op.get("summary") or op.get("description") or "").splitlines()[0:1]
            rows.append(f"| `{method.upper()}` | `{path}` | {' '.join(summary)} |")
    return "\n".join(rows)


def metrics_tables(metrics_dir: Path) -> str:
    files = sorted(metrics_dir.glob("*.json"))
    if not files:
        return (
            "No `metrics/*.json` in this checkout: run the pipeline (`dvc repro`) or fetch its outputs "
            "(`dvc pull`), then rebuild the docs."
        )
    parts = []
    for f in files:
        data = json.loads(f.read_text(encoding="utf-8"))
        rows = ["| Metric | Value |", "| --- | --- |"]
        for key, value in sorted(data.items()):
            shown = f"{value:.4f}" if isinstance(value, float) else f"{value}"
            rows.append(f"| `{key}` | {shown} |")
        parts.append(f"### `metrics/{f.name}`\n\n" + "\n".join(rows))
    return "\n\n".join(parts)


def benchmarks_page(bench_dir: Path) -> str:
    readme = bench_dir / "README.md"
    if readme.exists():
        return readme.read_text(encoding="utf-8")
    lines = ["# Benchmarks", "", "Scripts under `benchmarks/` measure and print; run them with `uv run`:", ""]
    for script in sorted(bench_dir.glob("*.py")):
        doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
        first = doc.strip().splitlines()[0] if doc.strip() else ""
        lines.append(f"- `uv run python benchmarks/{script.name}`: {first}")
    return "\n".join(lines) + "\n"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    files.append(File.generated(config, "openapi.json", content=json.dumps(openapi(), indent=2)))
    files.append(File.generated(config, "benchmarks.md", content=benchmarks_page(ROOT / "benchmarks")))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if "<!-- dvc-dag -->" in markdown:
        markdown = markdown.replace("<!-- dvc-dag -->", dvc_dag())
    if "<!-- openapi-endpoints -->" in markdown:
        markdown = markdown.replace("<!-- openapi-endpoints -->", endpoint_table(openapi()))
    if "<!-- metrics-tables -->" in markdown:
        markdown = markdown.replace("<!-- metrics-tables -->", metrics_tables(ROOT / "metrics"))
    return markdown
