"""ONNX export, int8 quantization, the ONNX Runtime encoder and the shared pooling functions."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from onnx_fixtures import ONNX_TEST_MAX_SEQ_LENGTH, bundled_minilm

from arxiv_embed.onnx import INT8_FILE, OnnxEncoder, TextTooLongError, export_onnx, load_config
from arxiv_embed.pooling import l2_normalize, mean_pool, rowwise_cosine

pytest_plugins = ["onnx_fixtures"]

# Made-up paper texts in the style of arXiv abstracts, short and long.
TEXTS = [
    "Graph neural networks for molecular property prediction. We propose a message passing architecture that "
    "learns invariant representations of molecules and improves the state of the art on QM9 by 12%.",
    "Dark matter halos of dwarf galaxies. Using high-resolution N-body simulations we measure the inner density "
    "slopes of halos and compare them with rotation curves of nearby dwarfs.",
    "On the distribution of prime gaps.",
    "We prove existence and uniqueness of weak solutions to a class of nonlinear elliptic equations with "
    "measure data, and derive sharp Sobolev regularity estimates near the boundary. " * 3,
    "Attention is all you need",
    "Spin-orbit coupling in two-dimensional heterostructures yields a topological phase transition, which we "
    "characterise by transport measurements at millikelvin temperatures and by first-principles calculations.",
    "x",
    "",
]
LONG_TEXT = "transformers " * 300


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """Sentence Transformers (torch) embeddings of TEXTS at the export's max_seq_length."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(bundled_minilm()), device="cpu")
    model.max_seq_length = ONNX_TEST_MAX_SEQ_LENGTH
    return model.encode(TEXTS, batch_size=4, normalize_embeddings=True, convert_to_numpy=True)


@pytest.fixture(scope="module")
def encoder(onnx_minilm_dir: Path) -> OnnxEncoder:
    return OnnxEncoder(onnx_minilm_dir, threads=2)


# --- pooling: exact numbers -------------------------------------------------------------------------------


def test_mean_pool_ignores_padding() -> None:
    tokens = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]], [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]])
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(mean_pool(tokens, mask), [[2.0, 3.0], [7.0, 8.0]])
    assert mean_pool(tokens, mask).dtype == np.float32


def test_mean_pool_of_an_empty_row_is_zero() -> None:
    np.testing.assert_array_equal(mean_pool(np.ones((1, 2, 3)), np.zeros((1, 2))), [[0.0, 0.0, 0.0]])


def test_mean_pool_rejects_mismatched_mask() -> None:
    with pytest.raises(ValueError, match="mask"):
        mean_pool(np.ones((2, 3, 4)), np.ones((2, 4)))


def test_l2_normalize() -> None:
    np.testing.assert_allclose(
        l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]])), [[0.6, 0.8], [0, 0], [0, -1]]
    )


def test_rowwise_cosine() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    b = np.array([[0.0, 1.0], [2.0, 2.0], [-3.0, 0.0]])
    np.testing.assert_allclose(rowwise_cosine(a, b), [0.0, 1.0, -1.0], atol=1e-7)
    with pytest.raises(ValueError, match="shapes differ"):
        rowwise_cosine(a, b[:2])


# --- export and encoder --------------------------------------------------------------------------------------


def test_export_folder(onnx_minilm_dir: Path) -> None:
    names = {p.name for p in onnx_minilm_dir.iterdir()}
    assert {"model.onnx", INT8_FILE, "tokenizer.json", "config.json"} <= names
    config = json.loads((onnx_minilm_dir / "config.json").read_text())
    assert config["dimension"] == 384
    assert config["max_seq_length"] == ONNX_TEST_MAX_SEQ_LENGTH
    assert config["pooling"] == "mean"
    assert config["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert load_config(onnx_minilm_dir) == config
    # Weights int8 per channel: about a quarter of the fp32 file.
    ratio = (onnx_minilm_dir / INT8_FILE).stat().st_size / (onnx_minilm_dir / "model.onnx").stat().st_size
    assert 0.2 < ratio < 0.35


def test_fp32_parity_with_sentence_transformers(encoder: OnnxEncoder, reference: np.ndarray) -> None:
    vectors = encoder.encode(TEXTS, batch_size=3)
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(TEXTS), 384)
    assert rowwise_cosine(vectors, reference).min() >= 0.9999


def test_int8_close_to_sentence_transformers(onnx_minilm_dir: Path, reference: np.ndarray) -> None:
    vectors = OnnxEncoder(onnx_minilm_dir, INT8_FILE, threads=2).encode(TEXTS, batch_size=3)
    cosine = rowwise_cosine(vectors, reference)
    # Abstract-like texts keep >= 0.99; one-word and empty texts lose most (measured 0.98 and 0.96).
    assert cosine[[0, 1, 3, 5]].min() >= 0.99
    assert cosine.min() >= 0.95
    # Quantized, not the fp32 model under another name.
    assert cosine.min() < 0.9999


def test_int8_graph_fuses_attention_but_not_the_slow_kernels(onnx_minilm_dir: Path) -> None:
    import onnx

    ops = Counter(node.op_type for node in onnx.load(str(onnx_minilm_dir / INT8_FILE)).graph.node)
    assert ops["QAttention"] == 6  # one per layer: the int8 QKV projection and attention in one op
    assert ops["LayerNormalization"] == 12  # two per layer, each after a plain residual Add
    assert ops["SkipLayerNormalization"] == 0
    assert ops["BiasGelu"] == 0
    assert ops["Gelu"] == 6


def test_encode_keeps_input_order_across_batches(encoder: OnnxEncoder) -> None:
    together = encoder.encode(TEXTS, batch_size=3)
    alone = np.concatenate([encoder.encode([t], batch_size=1) for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=2e-5)


def test_encode_normalize_flag(encoder: OnnxEncoder) -> None:
    raw = encoder.encode(TEXTS[:3], normalize=False)
    unit = encoder.encode(TEXTS[:3])
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(unit, l2_normalize(raw), atol=1e-6)


def test_encode_empty_list(encoder: OnnxEncoder) -> None:
    assert encoder.encode([]).shape == (0, 384)


def test_encode_rejects_bad_batch_size(encoder: OnnxEncoder) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        encoder.encode(["a"], batch_size=0)


def test_count_tokens(encoder: OnnxEncoder) -> None:
    # [CLS] ... [SEP]; "hello world" is two word pieces; counting does not truncate.
    assert encoder.count_tokens(["", "hello world", LONG_TEXT]) == [2, 4, 302]


def test_truncate_cuts_long_text_to_max_seq_length(encoder: OnnxEncoder) -> None:
    cut = " ".join(["transformers"] * (ONNX_TEST_MAX_SEQ_LENGTH - 2))
    assert encoder.count_tokens([cut]) == [ONNX_TEST_MAX_SEQ_LENGTH]
    np.testing.assert_allclose(encoder.encode([LONG_TEXT]), encoder.encode([cut]), atol=1e-6)


def test_no_truncate_raises_with_token_count(encoder: OnnxEncoder) -> None:
    with pytest.raises(TextTooLongError) as error:
        encoder.encode(["short", LONG_TEXT], truncate=False)
    assert (error.value.index, error.value.n_tokens, error.value.max_tokens) == (
        1,
        302,
        ONNX_TEST_MAX_SEQ_LENGTH,
    )
    assert "302 tokens" in str(error.value)
    # A text of exactly max_seq_length tokens passes.
    cut = " ".join(["transformers"] * (ONNX_TEST_MAX_SEQ_LENGTH - 2))
    assert encoder.encode([cut], truncate=False).shape == (1, 384)


def test_missing_model_file(onnx_minilm_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.onnx"):
        OnnxEncoder(onnx_minilm_dir, "nope.onnx")
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        OnnxEncoder(tmp_path)


@pytest.mark.slow
def test_export_rejects_too_long_max_seq_length(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_seq_length"):
        export_onnx(bundled_minilm(), tmp_path, 4096)
