"""A label-aware linear adapter on frozen embeddings: supervised contrastive learning over subject labels.

Fine-tuning the transformer is the slow part of the pipeline on a CPU; a linear map on top of the (base or
fine-tuned) model's normalised embeddings, trained with the supervised contrastive loss of Khosla et al. (2020)
over primary subjects (every paper of the anchor's subject in the batch is a positive), costs seconds once the
papers are embedded. It is a Sentence Transformers ``Dense`` module, so the adapted model saves, loads and
exports like any other:

    Transformer -> Pooling -> Normalize -> Dense (the adapter) -> Normalize

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


@dataclass(frozen=True)
class AdapterFit:
    weight: np.ndarray  # (out_dim, in_dim)
    bias: np.ndarray  # (out_dim,)
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
) -> AdapterFit:
    """A ``dim x dim`` linear map (from the identity) trained on rows ``x`` (L2-normalised) and their labels."""
    import torch

    if len(x) != len(labels):
        raise ValueError(f"{len(x)} embeddings but {len(labels)} labels")
    if len(x) < 2:
        raise ValueError("fit_adapter needs at least two papers")
    dim = x.shape[1]
    bad = [d for d in matryoshka_dims if not 1 <= d <= dim]
    if bad:
        raise ValueError(f"matryoshka_dims {bad} are not within 1..{dim}")
    if threads is not None:
        torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(seed)
    codes = torch.as_tensor(np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)[1])
    data = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
    with torch.random.fork_rng(devices=[]):  # seeded head, without touching the caller's random state
        torch.manual_seed(seed)
        layer = torch.nn.Linear(dim, dim)
        head = torch.nn.Linear(dim, int(codes.max()) + 1)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(dim))
        layer.bias.zero_()
    parameters = [*layer.parameters(), *(head.parameters() if classifier_weight > 0 else [])]
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
            out = layer(data[rows])
            loss = matryoshka_supcon(out, codes[rows], temperature, matryoshka_dims)
            if classifier_weight > 0:
                logits = head(torch.nn.functional.normalize(out, dim=1)) / CLASSIFIER_TEMPERATURE
                loss = loss + classifier_weight * torch.nn.functional.cross_entropy(logits, codes[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, batches = total + float(loss), batches + 1
        losses.append(total / max(batches, 1))
    return AdapterFit(
        weight=layer.weight.detach().numpy().astype(np.float32),
        bias=layer.bias.detach().numpy().astype(np.float32),
        losses=losses,
        seconds=time.perf_counter() - start,
    )


def apply_adapter(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, normalize: bool = True) -> np.ndarray:
    """The adapter on L2-normalised embeddings ``x``, as the adapted model computes it."""
    out = np.asarray(x, dtype=np.float32) @ weight.T + bias
    return l2_normalize(out) if normalize else out.astype(np.float32)


def with_adapter(model: SentenceTransformer, weight: np.ndarray, bias: np.ndarray) -> SentenceTransformer:
    """``model`` (Transformer -> Pooling [-> Normalize]) with the adapter and a final Normalize appended."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    modules = list(model)
    if not isinstance(modules[-1], Normalize):
        modules.append(Normalize())
    dense = Dense(
        in_features=weight.shape[1],
        out_features=weight.shape[0],
        bias=True,
        activation_function=torch.nn.Identity(),
    )
    with torch.no_grad():
        dense.linear.weight.copy_(torch.as_tensor(weight))
        dense.linear.bias.copy_(torch.as_tensor(bias))
    adapted = SentenceTransformer(modules=[*modules, dense, Normalize()], device=str(model.device))
    adapted.max_seq_length = model.max_seq_length
    return adapted


def adapter_of(model: SentenceTransformer) -> tuple[np.ndarray, np.ndarray] | None:
    """``(weight, bias)`` of the adapter of a model built by :func:`with_adapter`, else None."""
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    modules = list(model)
    if (
        len(modules) >= 5
        and isinstance(modules[-1], Normalize)
        and isinstance(modules[-2], Dense)
        and isinstance(modules[-3], Normalize)
    ):
        linear = modules[-2].linear
        bias = (
            linear.bias.detach().cpu().numpy() if linear.bias is not None else np.zeros(linear.out_features)
        )
        return linear.weight.detach().cpu().numpy().astype(np.float32), bias.astype(np.float32)
    return None
