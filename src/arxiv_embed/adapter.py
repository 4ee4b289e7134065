"""A label-aware linear adapter on frozen embeddings: supervised contrastive learning over subject labels.

Fine-tuning the transformer is the slow part of the pipeline on a CPU; a linear map on top of the (base or
fine-tuned) model's normalised embeddings, trained with the supervised contrastive loss of Khosla et al. (2020)
over primary subjects (every paper of the anchor's subject in the batch is a positive), costs seconds once the
papers are embedded. It is a Sentence Transformers ``Dense`` module, so the adapted model saves, loads and
exports like any other:

    Transformer -> Pooling -> Normalize -> Dense (the adapter) -> Normalize

With ``hidden > 0`` the adapter is a residual MLP, ``x + W2 relu(W1 x)`` with ``hidden`` units, written as two
standard ``Dense`` modules: the first maps to ``[x; -x; W1 x]`` (ReLU), the second sums
``relu(x) - relu(-x) = x`` and ``W2 relu(W1 x)``. It starts as the identity (``W2 = 0``) and every block is
trained, so the saved modules are the fitted map exactly:

    Transformer -> Pooling -> Normalize -> Dense (2 d + hidden, ReLU) -> Dense (d) -> Normalize

With ``matryoshka_dims`` the loss is the mean of the same loss on the first ``d`` coordinates (renormalised) of
the output for each ``d``, so truncated vectors keep their quality (Kusupati et al., 2022). With
``classifier_weight > 0`` a linear subject classifier on the output is trained with it (cross-entropy, weighted),
so the vectors also stay linearly separable by subject, which the API's classifier then uses; the head itself
is thrown away.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from arxiv_embed.pooling import l2_normalize

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer


CLASSIFIER_TEMPERATURE = 0.05  # logits of the auxiliary subject head: cosine-like scores / 0.05


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss (``L_out`` of Khosla et al.) of L2-normalised rows ``z`` with int ``labels``.

    For each anchor, the mean over its positives (other rows of its label) of ``-log softmax`` of its cosine
    to them among all other rows. Anchors without a positive in the batch are left out.
    """
    import torch

    n = z.shape[0]
    logits = z @ z.T / temperature
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, torch.finfo(logits.dtype).min)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~eye
    counts = positives.sum(dim=1)
    has = counts > 0
    if not bool(has.any()):
        return z.sum() * 0.0
    mean_log_prob = (log_prob.masked_fill(~positives, 0.0).sum(dim=1)[has]) / counts[has]
    return -mean_log_prob.mean()


def matryoshka_supcon(
    out: torch.Tensor, labels: torch.Tensor, temperature: float, dims: Sequence[int]
) -> torch.Tensor:
    """Mean of :func:`supcon_loss` over the renormalised prefixes of ``out`` (all of it when ``dims`` is empty)."""
    from torch.nn import functional as F

    sizes = list(dims) or [out.shape[1]]
    return sum(
        (supcon_loss(F.normalize(out[:, :d], dim=1), labels, temperature) for d in sizes),
        start=out.new_zeros(()),
    ) / len(sizes)


# An adapter: its layers (weight (out, in), bias (out,)), a ReLU between consecutive ones.
Layers = list[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class AdapterFit:
    layers: Layers
    losses: list[float]  # mean loss of each epoch
    seconds: float


def fit_adapter(
    x: np.ndarray,
    labels: Sequence[Any],
    temperature: float,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float = 0.0,
    matryoshka_dims: Sequence[int] = (),
    seed: int = 0,
    threads: int | None = None,
    classifier_weight: float = 0.0,
    hidden: int = 0,
) -> AdapterFit:
    """An adapter (from the identity) trained on rows ``x`` (L2-normalised) and their labels: a ``dim x dim``
    linear map, or with ``hidden > 0`` the residual MLP of the module docstring."""
    import torch

    if len(x) != len(labels):
        raise ValueError(f"{len(x)} embeddings but {len(labels)} labels")
    if len(x) < 2:
        raise ValueError("fit_adapter needs at least two papers")
    dim = x.shape[1]
    bad = [d for d in matryoshka_dims if not 1 <= d <= dim]
    if bad:
        raise ValueError(f"matryoshka_dims {bad} are not within 1..{dim}")
    if hidden < 0:
        raise ValueError(f"hidden = {hidden}: must be 0 (a linear adapter) or more")
    if threads is not None:
        torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(seed)
    codes = torch.as_tensor(np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)[1])
    data = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
    with torch.random.fork_rng(devices=[]):  # seeded head, without touching the caller's random state
        torch.manual_seed(seed)
        layers = _initial_layers(dim, hidden)
        head = torch.nn.Linear(dim, int(codes.max()) + 1)
    network = torch.nn.Sequential(
        *(m for i, lay in enumerate(layers) for m in [torch.nn.ReLU(), lay][i == 0 :])
    )
    parameters = [*network.parameters(), *(head.parameters() if classifier_weight > 0 else [])]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)
    losses: list[float] = []
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=generator)
        total, batches = 0.0, 0
        for i in range(0, len(order), batch_size):
            rows = order[i : i + batch_size]
            if len(rows) < 2:
                continue
            out = network(data[rows])
            loss = matryoshka_supcon(out, codes[rows], temperature, matryoshka_dims)
            if classifier_weight > 0:
                logits = head(torch.nn.functional.normalize(out, dim=1)) / CLASSIFIER_TEMPERATURE
                loss = loss + classifier_weight * torch.nn.functional.cross_entropy(logits, codes[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, batches = total + float(loss.detach()), batches + 1
        losses.append(total / max(batches, 1))
    return AdapterFit(
        layers=[
            (m.weight.detach().numpy().astype(np.float32), m.bias.detach().numpy().astype(np.float32))
            for m in layers
        ],
        losses=losses,
        seconds=time.perf_counter() - start,
    )


def _initial_layers(dim: int, hidden: int) -> list[torch.nn.Linear]:
    """The identity map: one ``dim x dim`` layer, or the two layers of the residual MLP with ``W2 = 0``."""
    import torch

    eye = torch.eye(dim)
    if hidden == 0:
        layer = torch.nn.Linear(dim, dim)
        with torch.no_grad():
            layer.weight.copy_(eye)
            layer.bias.zero_()
        return [layer]
    up, down = torch.nn.Linear(dim, 2 * dim + hidden), torch.nn.Linear(2 * dim + hidden, dim)
    with torch.no_grad():  # up: [x; -x; W1 x + b1] (W1, b1 as torch draws them); down: [I, -I, 0]
        up.weight[: 2 * dim].copy_(torch.cat([eye, -eye]))
        up.bias[: 2 * dim].zero_()
        down.weight.copy_(torch.cat([eye, -eye, torch.zeros(dim, hidden)], dim=1))
        down.bias.zero_()
    return [up, down]


def apply_adapter(x: np.ndarray, layers: Layers, normalize: bool = True) -> np.ndarray:
    """The adapter on L2-normalised embeddings ``x``, as the adapted model computes it."""
    out = np.asarray(x, dtype=np.float32)
    for i, (weight, bias) in enumerate(layers):
        out = out @ weight.T + bias
        if i < len(layers) - 1:
            out = np.maximum(out, 0.0)
    return l2_normalize(out) if normalize else out.astype(np.float32)


def with_adapter(model: SentenceTransformer, layers: Layers) -> SentenceTransformer:
    """``model`` (Transformer -> Pooling [-> Normalize]) with the adapter's ``Dense`` modules and a final
    Normalize appended."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    modules = list(model)
    if not isinstance(modules[-1], Normalize):
        modules.append(Normalize())
    denses = []
    for i, (weight, bias) in enumerate(layers):
        dense = Dense(
            in_features=weight.shape[1],
            out_features=weight.shape[0],
            bias=True,
            activation_function=torch.nn.ReLU() if i < len(layers) - 1 else torch.nn.Identity(),
        )
        with torch.no_grad():
            dense.linear.weight.copy_(torch.as_tensor(weight))
            dense.linear.bias.copy_(torch.as_tensor(bias))
        denses.append(dense)
    adapted = SentenceTransformer(modules=[*modules, *denses, Normalize()], device=str(model.device))
    adapted.max_seq_length = model.max_seq_length
    return adapted


def adapter_of(model: SentenceTransformer) -> Layers | None:
    """The layers of the adapter of a model built by :func:`with_adapter`, else None."""
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    modules = list(model)
    if len(modules) < 5 or not isinstance(modules[-1], Normalize):
        return None
    start = len(modules) - 1
    while start > 0 and isinstance(modules[start - 1], Dense):
        start -= 1
    denses = modules[start:-1]
    if not denses or not isinstance(modules[start - 1], Normalize):
        return None
    activations = [type(d.activation_function) for d in denses]
    if activations != [torch.nn.ReLU] * (len(denses) - 1) + [torch.nn.Identity]:
        return None
    layers = []
    for dense in denses:
        linear = dense.linear
        bias = (
            linear.bias.detach().cpu().numpy() if linear.bias is not None else np.zeros(linear.out_features)
        )
        layers.append((linear.weight.detach().cpu().numpy().astype(np.float32), bias.astype(np.float32)))
    return layers
