"""Training losses that know papers of one primary subject are not negatives of each other."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


class SubjectAwareMNRLoss(nn.Module):
    """MultipleNegativesRankingLoss whose in-batch negatives exclude papers of the anchor's own subject.

    Plain MNRL scores each anchor against every positive in the batch and treats all but its own as negatives;
    with ~150 subjects and batches of hundreds, many of those "negatives" share the anchor's subject, which pushes
    apart exactly the papers this model must keep together. Here such candidates are masked out of the softmax.
    Inputs: (anchor, positive[, negative]) texts and an integer ``label`` (the subject) per row; hard negatives
    (third column) are always kept as negatives.
    """

    def __init__(self, model: Any, scale: float = 20.0) -> None:
        super().__init__()
        self.model = model
        self.scale = scale

    def forward(
        self, sentence_features: Iterable[dict[str, torch.Tensor]], labels: torch.Tensor
    ) -> torch.Tensor:
        embeddings = [self.model(features)["sentence_embedding"] for features in sentence_features]
        anchors = F.normalize(embeddings[0], dim=-1)
        candidates = F.normalize(torch.cat(embeddings[1:]), dim=-1)
        scores = anchors @ candidates.T * self.scale  # batch x (batch * (n_columns - 1))
        return subject_masked_cross_entropy(scores, labels)

    @property
    def citation(self) -> str:
        return "Henderson et al., 2017, Efficient Natural Language Response Suggestion for Smart Reply"


def subject_masked_cross_entropy(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of anchor i against its positive i, ignoring other positives of the same subject."""
    batch = scores.shape[0]
    labels = labels.to(scores.device).long()
    same = labels[:, None] == labels[None, :]
    same.fill_diagonal_(False)  # the anchor's own positive stays
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask[:, :batch] = same
    scores = scores.masked_fill(mask, torch.finfo(scores.dtype).min)
    return F.cross_entropy(scores, torch.arange(batch, device=scores.device))


class SubjectSupConLoss(nn.Module):
    """Multi-positive contrastive loss over subjects: every paper of a row's subject in the batch is a positive.

    The rows are (anchor, positive) pairs with an integer ``label`` (the subject); all ``2 x batch`` texts are
    embedded and each is scored against every other with the supervised contrastive loss of Khosla et al.
    (2020), so a batch with k papers of one subject gives each of them k - 1 positives instead of MNRL's one,
    and no paper of the same subject is ever a negative. With ``group_by_label`` batches each subject appears
    several times per batch.
    """

    def __init__(self, model: Any, temperature: float = 0.05) -> None:
        super().__init__()
        self.model = model
        self.temperature = temperature

    def forward(
        self, sentence_features: Iterable[dict[str, torch.Tensor]], labels: torch.Tensor
    ) -> torch.Tensor:
        from arxiv_embed.adapter import supcon_loss

        embeddings = [self.model(features)["sentence_embedding"] for features in sentence_features]
        z = F.normalize(torch.cat(embeddings), dim=-1)
        labels = labels.to(z.device).long().repeat(len(embeddings))
        return supcon_loss(z, labels, self.temperature)

    @property
    def citation(self) -> str:
        return "Khosla et al., 2020, Supervised Contrastive Learning"
