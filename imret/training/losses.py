"""Training losses over tuples of L2-normalised descriptors.

A batch is B tuples of T descriptors: (anchor, positive, negative₁…negativeₙ), with
the instance label of each (B×T×D, B×T). Losses may hold parameters (the
classifier of cross-entropy); they are trained and checkpointed with the head.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.registry import Registry

LOSSES: Registry[type["TupleLoss"]] = Registry("loss")


class TupleLoss(nn.Module):
    default_margin = 0.0

    def __init__(self, margin: float | None, n_labels: int, dim: int):
        super().__init__()
        self.margin = self.default_margin if margin is None else float(margin)

    def prepare(self, pool: torch.Tensor, labels: torch.Tensor) -> None:
        """Data-dependent initialisation from the first descriptor pool (N×D, N labels)."""


@LOSSES.register("triplet")
class TripletLoss(TupleLoss):
    """max(0, |a−p| − |a−n| + margin), averaged over the tuple's negatives and the batch."""

    default_margin = 0.1

    def forward(self, desc: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        a, p, n = desc[:, :1], desc[:, 1:2], desc[:, 2:]
        return F.relu((a - p).norm(dim=-1) - (a - n).norm(dim=-1) + self.margin).mean()


@LOSSES.register("contrastive")
class ContrastiveLoss(TupleLoss):
    """cirtorch's contrastive loss: ½d² for the anchor–positive pair, ½max(0, margin−d)²
    for each anchor–negative pair, summed over a tuple, averaged over the batch."""

    default_margin = 0.7

    def forward(self, desc: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        d = (desc[:, :1] - desc[:, 1:]).norm(dim=-1)
        pos = 0.5 * d[:, 0].pow(2)
        neg = 0.5 * F.relu(self.margin - d[:, 1:]).pow(2).sum(1)
        return (pos + neg).mean()


@LOSSES.register("cross-entropy")
class CosineCrossEntropy(TupleLoss):
    """Cross-entropy over instance labels with a cosine classifier (scaled dot product
    of unit descriptors and unit class weights), on every descriptor of the batch.
    The class weights start at the class means of the first pool, so training starts
    from a classifier that already agrees with the descriptors."""

    scale = 16.0

    def __init__(self, margin: float | None, n_labels: int, dim: int):
        super().__init__(margin, n_labels, dim)
        self.weight = nn.Parameter(F.normalize(torch.randn(n_labels, dim), dim=1))

    @torch.no_grad()
    def prepare(self, pool: torch.Tensor, labels: torch.Tensor) -> None:
        means = torch.zeros_like(self.weight).index_add_(0, labels.to(pool.device), pool.to(self.weight))
        self.weight.copy_(F.normalize(means, dim=1))

    def forward(self, desc: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self.scale * desc.flatten(0, 1) @ F.normalize(self.weight, dim=1).T
        return F.cross_entropy(logits, labels.flatten())
