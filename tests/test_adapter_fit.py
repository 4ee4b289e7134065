"""arxiv_embed.adapter: the supervised contrastive loss, the fit, and the adapter as a Sentence Transformers module
that saves, loads and exports to ONNX with the same vectors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx_fixtures import bundled_minilm

from arxiv_embed.adapter import (
    adapter_of,
    apply_adapter,
    fit_adapter,
    matryoshka_supcon,
    supcon_loss,
    with_adapter,
)
from arxiv_embed.metrics import cosine_scores, ir_metrics
from arxiv_embed.pooling import l2_normalize, rowwise_cosine


def test_supcon_loss_by_hand() -> None:
    z = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]]), dim=1)
    labels = torch.tensor([0, 0, 1])
    t = 0.5
    sim = (z @ z.T / t).numpy()
    # Anchor 0: positive 1 among {1, 2}; anchor 1: positive 0 among {0, 2}; anchor 2 has no positive.
    expected = -np.mean(
        [
            sim[0, 1] - np.log(np.exp(sim[0, 1]) + np.exp(sim[0, 2])),
            sim[1, 0] - np.log(np.exp(sim[1, 0]) + np.exp(sim[1, 2])),
        ]
    )
    assert float(supcon_loss(z, labels, t)) == pytest.approx(expected, rel=1e-5)


def test_supcon_loss_without_positives_is_zero_with_a_gradient() -> None:
    z = torch.nn.functional.normalize(torch.randn(4, 3), dim=1).requires_grad_()
    loss = supcon_loss(z, torch.arange(4), 0.1)
    assert float(loss) == 0.0
    loss.backward()  # no error: it stays part of the graph


def test_matryoshka_loss_is_the_mean_over_prefixes() -> None:
    out = torch.randn(8, 6)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    parts = [supcon_loss(torch.nn.functional.normalize(out[:, :d], dim=1), labels, 0.2) for d in (6, 3)]
    assert float(matryoshka_supcon(out, labels, 0.2, [6, 3])) == pytest.approx(float(sum(parts) / 2))
    assert float(matryoshka_supcon(out, labels, 0.2, [])) == pytest.approx(float(parts[0]))


def clusters(n_per: int, dim: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Labelled points whose label lives in two noisy coordinates out of ``dim``: hard for raw cosine."""
    rng = np.random.default_rng(seed)
    labels, rows = [], []
    for k in range(4):
        centre = np.zeros(dim)
        centre[:2] = [math.cos(k * math.pi / 2), math.sin(k * math.pi / 2)]
        rows.append(centre * 0.6 + rng.normal(0, 1.0, (n_per, dim)) * np.r_[0.3, 0.3, [1.0] * (dim - 2)])
        labels += [f"s{k}"] * n_per
    return l2_normalize(np.vstack(rows)), labels


def test_fit_adapter_pulls_subjects_together() -> None:
    x, labels = clusters(60, 16, seed=0)
    q, q_labels = clusters(15, 16, seed=1)
    fit = fit_adapter(x, labels, temperature=0.1, epochs=40, batch_size=64, learning_rate=1e-2, seed=0)
    ((weight, bias),) = fit.layers
    assert weight.shape == (16, 16) and bias.shape == (16,)
    assert fit.losses[-1] < fit.losses[0]

    def p10(a: np.ndarray, b: np.ndarray) -> float:
        return ir_metrics(cosine_scores(a, b), q_labels, labels)["precision@10"]

    before = p10(q, x)
    after = p10(apply_adapter(q, fit.layers), apply_adapter(x, fit.layers))
    assert after > before + 0.2, (before, after)


def test_fit_adapter_is_deterministic_and_checks_its_input() -> None:
    x, labels = clusters(10, 4, seed=0)
    a = fit_adapter(x, labels, 0.1, epochs=3, batch_size=16, learning_rate=1e-2, seed=3)
    b = fit_adapter(x, labels, 0.1, epochs=3, batch_size=16, learning_rate=1e-2, seed=3)
    np.testing.assert_array_equal(a.layers[0][0], b.layers[0][0])
    with pytest.raises(ValueError, match="40 embeddings but 3 labels"):
        fit_adapter(x, labels[:3], 0.1, 1, 4, 1e-2)
    with pytest.raises(ValueError, match=r"matryoshka_dims \[8\] are not within 1\.\.4"):
        fit_adapter(x, labels, 0.1, 1, 4, 1e-2, matryoshka_dims=[8])


def test_the_mlp_adapter_starts_as_the_identity_and_learns_what_a_linear_map_cannot() -> None:
    # Labels by the sign of coordinate 0 times the sign of coordinate 1 (XOR): no linear map separates them.
    rng = np.random.default_rng(0)
    x = l2_normalize(rng.normal(size=(400, 8)))
    labels = [str(int(a > 0) ^ int(b > 0)) for a, b in x[:, :2]]
    start = fit_adapter(x, labels, 0.1, epochs=0, batch_size=64, learning_rate=1e-2, hidden=16)
    assert [w.shape for w, _ in start.layers] == [(2 * 8 + 16, 8), (8, 2 * 8 + 16)]
    np.testing.assert_allclose(apply_adapter(x, start.layers), x, atol=1e-6)

    def p10(layers: list) -> float:  # type: ignore[type-arg]
        v = apply_adapter(x, layers)
        return ir_metrics(cosine_scores(v[:100], v[100:]), labels[:100], labels[100:])["precision@10"]

    common = {"temperature": 0.1, "epochs": 60, "batch_size": 128, "learning_rate": 1e-2, "seed": 0}
    linear = fit_adapter(x, labels, **common)
    mlp = fit_adapter(x, labels, hidden=32, **common)
    assert p10(mlp.layers) > max(p10(linear.layers), p10(start.layers)) + 0.15
    with pytest.raises(ValueError, match="hidden = -1"):
        fit_adapter(x, labels, 0.1, 1, 4, 1e-2, hidden=-1)


@pytest.fixture(scope="module")
def adapted(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from arxiv_embed.models import load_model

    base = load_model(str(bundled_minilm()), device="cpu", max_seq_length=64)
    rng = np.random.default_rng(0)
    weight = (np.eye(384) + rng.normal(0, 0.05, (384, 384))).astype(np.float32)
    bias = rng.normal(0, 0.01, 384).astype(np.float32)
    folder = tmp_path_factory.mktemp("adapted")
    with_adapter(base, [(weight, bias)]).save(str(folder))
    return base, weight, bias, folder


TEXTS = [
    "Graph neural networks for molecules.",
    "Elliptic regularity of weak solutions.",
    "a",
    "Dark matter halos " * 20,
]


def test_adapted_model_saves_loads_and_computes_the_adapter(adapted) -> None:  # type: ignore[no-untyped-def]
    from arxiv_embed.models import load_model

    base, weight, bias, folder = adapted
    loaded = load_model(str(folder), device="cpu", max_seq_length=64)
    found = adapter_of(loaded)
    assert found is not None
    np.testing.assert_allclose(found[0][0], weight, atol=1e-6)
    assert adapter_of(base) is None
    expected = apply_adapter(base.encode(TEXTS, normalize_embeddings=True), [(weight, bias)])
    got = loaded.encode(TEXTS, normalize_embeddings=True)
    assert rowwise_cosine(got, expected).min() > 0.99999


def test_an_mlp_adapter_saves_loads_and_exports_with_the_same_vectors(tmp_path: Path) -> None:
    from arxiv_embed.models import load_model
    from arxiv_embed.onnx import OnnxEncoder, export_onnx

    base = load_model(str(bundled_minilm()), device="cpu", max_seq_length=64)
    rng = np.random.default_rng(1)
    x = base.encode(TEXTS, normalize_embeddings=True)
    layers = fit_adapter(np.vstack([x, x]), list("abab") * 2, 0.1, 0, 4, 1e-2, hidden=8).layers
    layers = [(w + rng.normal(0, 0.05, w.shape).astype(np.float32), b) for w, b in layers]  # not the identity
    with_adapter(base, layers).save(str(tmp_path / "model"))
    loaded = load_model(str(tmp_path / "model"), device="cpu", max_seq_length=64)
    found = adapter_of(loaded)
    assert found is not None and len(found) == 2
    expected = apply_adapter(x, layers)
    assert rowwise_cosine(expected, x).min() < 0.999  # the adapter changes the vectors
    assert rowwise_cosine(loaded.encode(TEXTS, normalize_embeddings=True), expected).min() > 0.99999
    export_onnx(tmp_path / "model", tmp_path / "onnx", 64)
    got = OnnxEncoder(tmp_path / "onnx").encode(TEXTS, batch_size=2)
    assert rowwise_cosine(got, expected).min() > 0.9999


def test_onnx_export_carries_the_adapter(adapted, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from arxiv_embed.models import load_model
    from arxiv_embed.onnx import ADAPTER_FILE, OnnxEncoder, export_onnx, load_config

    _, _, _, folder = adapted
    export_onnx(folder, tmp_path, 64, dimensions=[128, 64])
    config = load_config(tmp_path)
    assert config["adapter"] == ADAPTER_FILE and (tmp_path / ADAPTER_FILE).is_file()
    assert config["dimensions"] == [384, 128, 64]
    reference = load_model(str(folder), device="cpu", max_seq_length=64).encode(
        TEXTS, normalize_embeddings=True
    )
    encoder = OnnxEncoder(tmp_path)
    assert encoder.dimensions == [384, 128, 64]
    assert rowwise_cosine(encoder.encode(TEXTS, batch_size=2), reference).min() > 0.9999
