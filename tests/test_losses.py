"""arxiv_embed.losses: the subject-masked cross-entropy on a toy score matrix."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from arxiv_embed.losses import subject_masked_cross_entropy

# 3 anchors x 3 positives (+ 3 hard negatives in the last columns of the second matrix).
SCORES = torch.tensor([[2.0, 1.0, 0.0], [1.0, 3.0, 2.0], [0.5, 0.0, 1.0]], dtype=torch.float64)


def test_same_subject_candidates_are_masked_own_positive_kept() -> None:
    labels = torch.tensor([0, 0, 1])  # anchors 0 and 1 share a subject
    # Row 0 drops column 1, row 1 drops column 0, row 2 keeps everything.
    row0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(0)))
    row1 = -math.log(math.exp(3) / (math.exp(3) + math.exp(2)))
    row2 = -math.log(math.exp(1) / (math.exp(0.5) + math.exp(0) + math.exp(1)))
    loss = subject_masked_cross_entropy(SCORES.clone(), labels)
    assert loss.item() == pytest.approx((row0 + row1 + row2) / 3, rel=1e-12)


def test_equals_plain_cross_entropy_when_subjects_differ() -> None:
    labels = torch.tensor([4, 7, 9])
    expected = F.cross_entropy(SCORES, torch.arange(3))
    assert subject_masked_cross_entropy(SCORES.clone(), labels).item() == pytest.approx(expected.item())


def test_hard_negative_columns_are_never_masked() -> None:
    negatives = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]], dtype=torch.float64)
    scores = torch.cat([SCORES, negatives], dim=1)  # 3 x 6
    labels = torch.tensor([1, 1, 1])  # every in-batch positive but the own one is masked
    expected = [
        -math.log(math.exp(SCORES[i, i]) / (math.exp(SCORES[i, i]) + negatives[i].exp().sum().item()))
        for i in range(3)
    ]
    loss = subject_masked_cross_entropy(scores, labels)
    assert loss.item() == pytest.approx(sum(expected) / 3, rel=1e-12)


def test_float32_mask_stays_finite() -> None:
    labels = torch.tensor([0, 0, 0])
    loss = subject_masked_cross_entropy(SCORES.float(), labels)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)  # only the own positive remains in each row
