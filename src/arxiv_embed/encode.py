"""Embedding papers with a Sentence Transformer for the evaluation stages."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from arxiv_embed.text import TextMode, papers_texts


def encode_papers(
    model: Any, papers: pd.DataFrame, mode: TextMode, batch_size: int, desc: str = ""
) -> np.ndarray:
    """L2-normalised float32 embeddings of ``papers`` (title + abstract or abstract, as ``mode`` says)."""
    if desc:
        print(f"encoding {len(papers)} papers: {desc}", flush=True)
    texts = papers_texts(papers, mode)
    embeddings = model.encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=True
    )
    return np.asarray(embeddings, dtype=np.float32)
