"""benchmarks/api_load.py: the servers' vectors must agree before a table is printed, every model copy
truncates at our export's length, and the data default is relative to the repository."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import api_load, encode_cpu


def test_disagreeing_vectors_stop_the_comparison() -> None:
    reference = np.eye(3, dtype=np.float32)
    same = reference.copy()
    assert api_load.agreement(same, reference, "b", "a", 0.99) == pytest.approx(1.0)
    turned = reference.copy()
    turned[2] = [0.0, 0.28, 0.96]  # cosine 0.96 with the reference's third row, as a 512- vs 128-token model
    with pytest.raises(SystemExit, match=r"b's vectors disagree with a's \(min cosine 0\.9600 < 0\.99\)"):
        api_load.agreement(turned, reference, "b", "a", 0.99)


def test_model_copies_truncate_at_our_length(tmp_path: Path) -> None:
    st = tmp_path / "st"
    st.mkdir()
    (st / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256, "do_lower_case": False}))
    (st / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512}))
    (st / "weights.bin").write_bytes(b"x")
    onnx = tmp_path / "onnx"
    onnx.mkdir()
    (onnx / "config.json").write_text(json.dumps({"max_seq_length": 128, "dimension": 384}))

    tokens = api_load.max_tokens(onnx)
    copy = api_load.truncating_at(st, tmp_path / "work", tokens)
    assert json.loads((copy / "sentence_bert_config.json").read_text()) == {
        "max_seq_length": 128,
        "do_lower_case": False,
    }
    assert json.loads((copy / "tokenizer_config.json").read_text())["model_max_length"] == 128
    assert (copy / "weights.bin").read_bytes() == b"x"
    assert json.loads((st / "sentence_bert_config.json").read_text())["max_seq_length"] == 256  # untouched


def test_data_defaults_are_relative_to_the_repository() -> None:
    repo = Path(api_load.__file__).resolve().parents[1]
    expected = repo.parent / "shared/data/arxiv-sample.jsonl.gz"
    assert expected == api_load.SHARED_DATA
    assert expected == Path(encode_cpu.DEFAULT_DATA)
    for script in ("api_load.py", "encode_cpu.py", "overload.py"):
        assert "/work/" not in (repo / "benchmarks" / script).read_text()
