"""fast_encode (the GPU encoding path) against model.encode on a CPU, and its tokenising / prefetching helpers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit

from arxiv_embed import encode
from arxiv_embed.encode import encode_papers, fast_encode, prefetch, supports_fast_path, tokenize_batch
from arxiv_embed.models import MINILM, load_model

MAX_SEQ_LENGTH = 48
# Made-up texts of very different lengths: empty, one character, short titles, abstracts beyond MAX_SEQ_LENGTH.
TEXTS = [
    "On the distribution of prime gaps.",
    "",
    "We prove existence and uniqueness of weak solutions to a class of nonlinear elliptic equations with "
    "measure data, and derive sharp Sobolev regularity estimates near the boundary. " * 3,
    "x",
    "Graph neural networks for molecular property prediction. We propose a message passing architecture that "
    "learns invariant representations of molecules and improves the state of the art on QM9 by 12%.",
    "Attention is all you need",
    "transformers " * 300,
    "Dark matter halos of dwarf galaxies. Using high-resolution N-body simulations we measure the inner density "
    "slopes of halos and compare them with rotation curves of nearby dwarfs.",
    "Spin-orbit coupling in two-dimensional heterostructures.",
    "Quantum error correction with surface codes at scale",
    "A survey of reinforcement learning from human feedback, its reward models and their failure modes, with "
    "recommendations for evaluation.",
]


@pytest.fixture(scope="module")
def model() -> Any:
    return load_model(MINILM, device="cpu", max_seq_length=MAX_SEQ_LENGTH)


@pytest.fixture(scope="module")
def reference(model: Any) -> np.ndarray:
    return model.encode(TEXTS, batch_size=4, normalize_embeddings=True, convert_to_numpy=True)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# --- helpers: exact values ---------------------------------------------------------------------------------


def word_tokenizer(max_length: int) -> Tokenizer:
    tokenizer = Tokenizer(WordLevel({"[PAD]": 0, "[UNK]": 1, "a": 2, "b": 3, "c": 4}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = WhitespaceSplit()
    tokenizer.enable_truncation(max_length)
    return tokenizer


def test_tokenize_batch_pads_right_to_the_longest_and_truncates() -> None:
    ids, mask = tokenize_batch(word_tokenizer(3), ["b", "a b c a b", "", "c zz"], pad_id=0)
    np.testing.assert_array_equal(ids, [[3, 0, 0], [2, 3, 4], [0, 0, 0], [4, 1, 0]])
    np.testing.assert_array_equal(mask, [[1, 0, 0], [1, 1, 1], [0, 0, 0], [1, 1, 0]])
    assert ids.dtype == mask.dtype == np.int64


def test_tokenize_batch_pads_with_the_pad_id() -> None:
    ids, mask = tokenize_batch(word_tokenizer(8), ["a", "a b"], pad_id=7)
    np.testing.assert_array_equal(ids, [[2, 7], [2, 3]])
    np.testing.assert_array_equal(mask, [[1, 0], [1, 1]])


def test_prefetch_keeps_order_and_stays_at_most_ahead() -> None:
    taken: list[int] = []

    def items() -> Iterator[int]:
        for i in range(10):
            taken.append(i)
            yield i

    results = prefetch(lambda x: x * x, items(), workers=2, ahead=3)
    assert next(results) == 0
    assert len(taken) == 4  # three submitted up front, one more once the first result is taken
    assert list(results) == [x * x for x in range(1, 10)]


def test_prefetch_of_nothing_is_empty() -> None:
    assert list(prefetch(str, iter([]), workers=2, ahead=4)) == []


# --- fast_encode against model.encode ----------------------------------------------------------------------


def test_minilm_takes_the_fast_path(model: Any) -> None:
    assert supports_fast_path(model)


@pytest.mark.parametrize("batch_size", [1, 4, 64])
def test_fast_encode_matches_model_encode(model: Any, reference: np.ndarray, batch_size: int) -> None:
    # 11 texts: batch size 4 leaves a last batch of 3; 1 and 64 are the extremes
    embeddings = fast_encode(model, TEXTS, batch_size=batch_size)
    assert embeddings.shape == reference.shape and embeddings.dtype == np.float32
    assert cosines(embeddings, reference).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_fast_encode_keeps_input_order(model: Any, reference: np.ndarray) -> None:
    permutation = np.random.default_rng(0).permutation(len(TEXTS))
    embeddings = fast_encode(model, [TEXTS[i] for i in permutation], batch_size=3)
    assert cosines(embeddings, reference[permutation]).min() >= 0.9999
    # every row is nearest to its own text's reference vector, not to a neighbour's
    np.testing.assert_array_equal((embeddings @ reference.T).argmax(axis=1), permutation)


def test_fast_encode_truncates_at_max_seq_length(model: Any) -> None:
    long = TEXTS[2]
    a, b, short = fast_encode(
        model, [long, long + " Totally different closing words.", long[:40]], batch_size=2
    )
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert a @ short < 0.99


def test_fast_encode_of_no_text(model: Any) -> None:
    embeddings = fast_encode(model, [], batch_size=8)
    assert embeddings.shape == (0, model.get_embedding_dimension()) and embeddings.dtype == np.float32


def test_fast_encode_rejects_a_bad_batch_size(model: Any) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        fast_encode(model, TEXTS, batch_size=0)


def test_other_pooling_falls_back_to_model_encode(model: Any, reference: np.ndarray) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    cls_model = SentenceTransformer(
        modules=[model[0], Pooling(model.get_embedding_dimension(), pooling_mode="cls")], device="cpu"
    )
    assert not supports_fast_path(cls_model)
    expected = cls_model.encode(TEXTS, batch_size=4, normalize_embeddings=True, convert_to_numpy=True)
    embeddings = fast_encode(cls_model, TEXTS, batch_size=4)
    np.testing.assert_allclose(embeddings, expected, atol=1e-6)
    assert cosines(embeddings, reference).min() < 0.99  # CLS vectors, not mean-pooled ones


# --- encode_papers: the path by device ---------------------------------------------------------------------


def test_encode_papers_uses_fast_encode_on_cuda_only(model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    papers = pd.DataFrame({"title": ["Prime gaps", "Dark matter"], "abstract": ["We bound gaps.", "Halos."]})
    calls: list[list[str]] = []

    def recorder(_model: Any, texts: list[str], batch_size: int) -> np.ndarray:
        calls.append(texts)
        return np.zeros((len(texts), 384), dtype=np.float32)

    monkeypatch.setattr(encode, "fast_encode", recorder)
    on_cpu = encode_papers(model, papers, "title_abstract", batch_size=2)
    assert (
        calls == []
        and cosines(on_cpu, model.encode(["Prime gaps. We bound gaps.", "Dark matter. Halos."])).min()
        > 0.9999
    )

    class OnCuda:
        device = torch.device("cuda")

    encode_papers(OnCuda(), papers, "abstract", batch_size=2)
    assert calls == [["We bound gaps.", "Halos."]]


@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA GPU")
def test_fast_encode_fp16_on_cuda_matches_model_encode() -> None:
    gpu_model = load_model(MINILM, device="cuda", max_seq_length=MAX_SEQ_LENGTH)
    expected = gpu_model.encode(TEXTS, batch_size=4, normalize_embeddings=True, convert_to_numpy=True)
    embeddings = fast_encode(gpu_model, TEXTS, batch_size=4, precision="fp16")
    assert cosines(embeddings, expected).min() >= 0.9997
