"""Tiny serving artefacts for the image smoke test (scripts/image_smoke.sh) when no pipeline run left any.

Writes ``<out>/onnx``, ``<out>/faiss`` and ``<out>/classifier`` in the layout the pipeline writes under ``models/``:
the bundled all-MiniLM-L6-v2 exported to ONNX (fp32 + int8) as ``tests/onnx_fixtures.py`` does, and the six-paper
index and three-subject nearest-centroid classifier of ``tests/serve/conftest.py``, embedded with the int8 graph that
the server loads by default (queries and index from the same graph, as ``faiss_build`` does).

    uv run python scripts/image_models.py <out>
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from arxiv_embed.onnx import INT8_FILE, OnnxEncoder, export_onnx, quantize_int8

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "serve")]  # as pytest puts them for the tests
from onnx_fixtures import ONNX_TEST_MAX_SEQ_LENGTH, bundled_minilm  # noqa: E402


def _api_test_fixtures() -> tuple[list[tuple[str, str, str]], list[str]]:
    """PAPERS and SUBJECTS of tests/serve/conftest.py (loaded by path: tests/conftest.py has the same name)."""
    spec = importlib.util.spec_from_file_location("serve_conftest", REPO / "tests" / "serve" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PAPERS, module.SUBJECTS


PAPERS, SUBJECTS = _api_test_fixtures()


def write_models(out: Path) -> None:
    onnx_dir, index_dir, classifier_dir = out / "onnx", out / "faiss", out / "classifier"
    for folder in (onnx_dir, index_dir, classifier_dir):
        folder.mkdir(parents=True, exist_ok=False)
    fp32 = export_onnx(bundled_minilm(), onnx_dir, ONNX_TEST_MAX_SEQ_LENGTH, dimensions=(128, 8))
    quantize_int8(fp32, onnx_dir / INT8_FILE)

    vectors = OnnxEncoder(onnx_dir, INT8_FILE).encode([title for _, title, _ in PAPERS], normalize=True)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    faiss.write_index(index, str(index_dir / "index.faiss"))
    pd.DataFrame(PAPERS, columns=["id", "title", "subject"]).to_parquet(index_dir / "meta.parquet")

    subjects = np.array([subject for _, _, subject in PAPERS])
    coef = np.stack([20 * vectors[subjects == s].mean(axis=0) for s in SUBJECTS]).astype(np.float32)
    np.save(classifier_dir / "coef.npy", coef)
    np.save(classifier_dir / "intercept.npy", np.zeros(len(SUBJECTS), dtype=np.float32))
    (classifier_dir / "classes.json").write_text(json.dumps(SUBJECTS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to create onnx/, faiss/ and classifier/ in")
    write_models(parser.parse_args().out)


if __name__ == "__main__":
    main()
