"""What the API loads at start besides the model: the FAISS index of papers and the subject classifier."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

INDEX_FILE = "index.faiss"
META_FILE = "meta.parquet"
META_COLUMNS = ("id", "title", "subject")


class ResourceError(RuntimeError):
    """A model artefact is present but unusable (wrong shape, missing column): the server must not start."""


@dataclass(frozen=True)
class PaperIndex:
    """FAISS index over paper embeddings; row ``i`` of ``meta`` describes vector ``i``."""

    index: faiss.Index
    meta: pd.DataFrame

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def search(self, query: np.ndarray, k: int) -> list[dict[str, object]]:
        """The ``k`` nearest papers to one normalised query vector, best first.

        A longer query vector than the index's (a Matryoshka index) is cut to the index's size and renormalised.
        """
        k = min(k, self.size)
        if query.shape[-1] > self.index.d:
            query = query[..., : self.index.d]
            query = query / max(float(np.linalg.norm(query)), 1e-12)
        scores, rows = self.index.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32), k)
        hits = []
        for rank, (score, row) in enumerate(zip(scores[0], rows[0], strict=True), start=1):
            if row < 0:  # an approximate index may find fewer than k
                break
            paper = self.meta.iloc[int(row)]
            hits.append(
                {
                    "rank": rank,
                    "score": float(score),
                    "id": paper.id,
                    "title": paper.title,
                    "subject": paper.subject,
                }
            )
        return hits


@dataclass(frozen=True)
class Classifier:
    """Multinomial logistic regression: probabilities = softmax(x @ coef.T + intercept)."""

    coef: np.ndarray
    intercept: np.ndarray
    classes: list[str]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        logits = x.astype(np.float32) @ self.coef.T + self.intercept
        logits -= logits.max(axis=-1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=-1, keepdims=True)


def load_index(index_dir: Path, dimensions: int | list[int]) -> PaperIndex:
    """Read ``index.faiss`` and ``meta.parquet``; fail if they disagree with each other or with the model.

    ``dimensions``: the vector sizes the model was evaluated at; the index may hold any of them (queries are cut
    to its size)."""
    dimension = dimensions if isinstance(dimensions, int) else dimensions[0]
    allowed = [dimensions] if isinstance(dimensions, int) else list(dimensions)
    index = faiss.read_index(str(index_dir / INDEX_FILE))
    meta = pd.read_parquet(index_dir / META_FILE)
    missing = [c for c in META_COLUMNS if c not in meta.columns]
    if missing:
        raise ResourceError(f"{index_dir / META_FILE}: missing column(s) {missing}")
    if index.d not in allowed:
        raise ResourceError(
            f"{index_dir}: index dimension {index.d} is not one the model was evaluated at "
            f"({', '.join(map(str, allowed))}; model dimension {dimension})"
        )
    if index.ntotal != len(meta):
        raise ResourceError(f"{index_dir}: {index.ntotal} vectors but {len(meta)} metadata rows")
    meta = meta[list(META_COLUMNS)].astype(str).reset_index(drop=True)
    return PaperIndex(index, meta)


def load_classifier(classifier_dir: Path, dimension: int) -> Classifier:
    """Read ``coef.npy``, ``intercept.npy`` and ``classes.json``; fail if the shapes disagree."""
    coef = np.load(classifier_dir / "coef.npy").astype(np.float32)
    intercept = np.load(classifier_dir / "intercept.npy").astype(np.float32)
    classes = json.loads((classifier_dir / "classes.json").read_text(encoding="utf-8"))
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise ResourceError(f"{classifier_dir}/classes.json: expected a list of subject strings")
    if coef.shape != (len(classes), dimension) or intercept.shape != (len(classes),):
        raise ResourceError(
            f"{classifier_dir}: coef {coef.shape} / intercept {intercept.shape} do not fit "
            f"{len(classes)} classes x dimension {dimension}"
        )
    return Classifier(coef, intercept, classes)


def absent_reason(folder: Path | None, files: tuple[str, ...]) -> str | None:
    """Why an optional artefact is not loaded (not configured, or files missing); None if it is all there."""
    if folder is None:
        return "not configured"
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        return f"{folder}: missing {', '.join(missing)}"
    return None
