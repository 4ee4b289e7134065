"""Mean pooling and L2 normalisation of token embeddings (numpy).

The one implementation used by the ONNX export's parity check and by the API, so both see the same vectors.
"""

from __future__ import annotations

import numpy as np


def mean_pool(token_embeddings: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Average of the token embeddings where ``attention_mask`` is 1: (batch, seq, dim) -> (batch, dim).

    A row with no token at all pools to zeros instead of dividing by zero (as Sentence Transformers does).
    """
    if token_embeddings.ndim != 3 or attention_mask.shape != token_embeddings.shape[:2]:
        raise ValueError(
            f"expected token embeddings (batch, seq, dim) and a (batch, seq) mask, "
            f"got {token_embeddings.shape} and {attention_mask.shape}"
        )
    mask = attention_mask.astype(np.float32)[:, :, None]
    summed = (token_embeddings.astype(np.float32) * mask).sum(axis=1)
    counts = np.clip(mask.sum(axis=1), 1e-9, None)
    return summed / counts


def l2_normalize(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm; an all-zero row stays zero."""
    vectors = vectors.astype(np.float32, copy=False)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, eps)


def rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b``."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return (l2_normalize(a) * l2_normalize(b)).sum(axis=-1)
