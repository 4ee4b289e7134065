"""Pairs: training pairs of papers from the train split, by primary subject.

Reads   ``${paths.split_dir}/train.parquet``.
Params  ``pairs`` section, ``meta.seed``.
Writes  ``${paths.pairs_dir}/mnrl.parquet``: (anchor_id, positive_id, subject[, negative_id]) of the same subject,
        for MultipleNegativesRankingLoss; ``negative_id`` (with ``hard_negatives``) is a paper of a sibling subject
        of the same archive (``math.AP`` for ``math.CA``), else of any other subject.
        ``${paths.pairs_dir}/contrastive.parquet``: (id1, id2, label), a share ``contrastive_positive_fraction``
        of them same-subject (label 1), the others of two different subjects (label 0), for the contrastive
        losses; ``n_contrastive: 0`` writes the file with no rows.
        ``metrics/pairs.json``.
Pairs hold paper ids; the train stage joins them to the text chosen by ``meta.text_mode``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from arxiv_embed.io import read_split, write_json, write_parquet
from arxiv_embed.params import PairsParams, run_stage_check
from arxiv_embed.storage import stage_storage
from arxiv_embed.subjects import archive


class _Groups:
    """Row indices of the papers of each subject (subjects with at least two papers)."""

    def __init__(self, subjects: pd.Series):
        codes, self.names = pd.factorize(subjects, sort=True)
        self.codes = codes
        order = np.argsort(codes, kind="stable")
        self.sizes = np.bincount(codes, minlength=len(self.names))
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.members = order  # members of subject s: members[starts[s]:starts[s]+sizes[s]]
        self.position = np.empty_like(order)
        self.position[order] = np.arange(len(order)) - self.starts[codes[order]]
        self.usable = self.sizes >= 2

    def other_member(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A different paper of the same subject for each row."""
        s = self.codes[rows]
        offset = rng.integers(1, self.sizes[s])  # 1 .. size-1
        return self.members[self.starts[s] + (self.position[rows] + offset) % self.sizes[s]]

    def random_member(self, subjects: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.members[self.starts[subjects] + rng.integers(0, self.sizes[subjects])]


def sample_anchors(groups: _Groups, n: int, sampling: str, rng: np.random.Generator) -> np.ndarray:
    """Row indices of ``n`` anchors: papers uniformly (proportional) or subjects uniformly (balanced)."""
    usable_subjects = np.flatnonzero(groups.usable)
    if len(usable_subjects) == 0:
        raise ValueError("pairs: no subject has two papers in the train split")
    if n == 0:
        return np.empty(0, dtype=np.int64)
    if sampling == "balanced":
        return groups.random_member(rng.choice(usable_subjects, size=n), rng)
    if sampling == "proportional":
        candidates = np.flatnonzero(groups.usable[groups.codes])
        # Cycle through shuffled papers so each paper anchors about equally often.
        reps = -(-n // len(candidates))
        return np.concatenate([rng.permutation(candidates) for _ in range(reps)])[:n]
    raise ValueError(f"pairs: unknown sampling {sampling!r}; expected 'proportional' or 'balanced'")


def sibling_negatives(groups: _Groups, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each anchor, a paper of another subject of the same archive when there is one, else any other."""
    names = list(groups.names)
    by_archive: dict[str, list[int]] = {}
    for code, name in enumerate(names):
        by_archive.setdefault(archive(name), []).append(code)
    all_codes = np.arange(len(names))
    negative_subjects = np.empty(len(anchors), dtype=np.int64)
    for i, subject in enumerate(groups.codes[anchors]):
        siblings = [c for c in by_archive[archive(names[subject])] if c != subject]
        pool = siblings or all_codes[all_codes != subject]
        negative_subjects[i] = pool[rng.integers(len(pool))]
    return groups.random_member(negative_subjects, rng)


def make_pairs(train: pd.DataFrame, params: PairsParams, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MNRL pairs and balanced contrastive pairs from the train split."""
    train = train.sort_values("id", kind="stable").reset_index(drop=True)
    if train["subject"].nunique() < 2:
        raise ValueError("pairs: the train split needs at least two subjects")
    rng = np.random.default_rng(seed)
    groups = _Groups(train["subject"])
    ids = train["id"].to_numpy()

    anchors = sample_anchors(groups, params.n_pairs, params.sampling, rng)
    positives = groups.other_member(anchors, rng)
    mnrl = pd.DataFrame(
        {
            "anchor_id": ids[anchors],
            "positive_id": ids[positives],
            "subject": groups.names[groups.codes[anchors]],
        }
    )
    if params.hard_negatives:
        mnrl["negative_id"] = ids[sibling_negatives(groups, anchors, rng)]

    n_pos = round(params.n_contrastive * params.contrastive_positive_fraction)
    n_neg = params.n_contrastive - n_pos
    pos_a = sample_anchors(groups, n_pos, params.sampling, rng)
    neg_a = sample_anchors(groups, n_neg, params.sampling, rng)
    # A paper of a uniformly drawn different subject.
    shift = rng.integers(1, len(groups.names), size=n_neg)
    neg_b = groups.random_member((groups.codes[neg_a] + shift) % len(groups.names), rng)
    contrastive = pd.DataFrame(
        {
            "id1": ids[np.concatenate([pos_a, neg_a]).astype(np.int64)],
            "id2": ids[np.concatenate([groups.other_member(pos_a, rng), neg_b]).astype(np.int64)],
            "label": np.concatenate([np.ones(n_pos), np.zeros(n_neg)]).astype(np.float32),
        }
    )
    contrastive = contrastive.iloc[rng.permutation(len(contrastive))].reset_index(drop=True)
    return mnrl, contrastive


@stage_storage("pairs")
def main() -> None:
    p = run_stage_check("pairs")
    paths = p.paths
    train = read_split(paths.split_dir, "train", columns=["id", "subject"])
    mnrl, contrastive = make_pairs(train, p.pairs, p.meta.seed)
    write_parquet(mnrl, Path(paths.pairs_dir) / "mnrl.parquet")
    write_parquet(contrastive, Path(paths.pairs_dir) / "contrastive.parquet")
    report = {
        "pairs_mnrl": len(mnrl),
        "pairs_mnrl_subjects": int(mnrl["subject"].nunique()),
        "pairs_contrastive": len(contrastive),
        "pairs_contrastive_positive_fraction": float(contrastive["label"].mean())
        if len(contrastive)
        else 0.0,
    }
    write_json(Path(paths.metrics_dir) / "pairs.json", report)
    print(report)


if __name__ == "__main__":
    main()
