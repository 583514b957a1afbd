"""Context-aware regional attention (Kim et al., "Regional attention based deep
feature for image retrieval", BMVC 2018).

Each R-MAC region gets a weight from its own MAC descriptor and the image's
global descriptor together, k = [region, global]:
``weight = softplus(Wc·tanh(Wr·k + br) + bc)`` (kept above 1e-6); the descriptor is the
weighted mean of the L2-normalised region descriptors. Whitening follows in the
index. Wc starts at zero, so the untrained head weighs every region alike and
gives R-MAC.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.registry import HEADS
from . import functional as Fn
from .common import AttentionHead, identity_score, positive


@HEADS.register("regional")
class RegionalAttention(AttentionHead):
    def __init__(self, in_channels: int, levels: int = 3, hidden: int = 256):
        super().__init__(in_channels)
        self.levels = levels
        self.hidden = nn.Linear(2 * in_channels, hidden)
        self.score = identity_score(nn.Linear(hidden, 1))

    @staticmethod
    def validate(levels: int = 3, hidden: int = 256) -> None:
        if not (isinstance(levels, int) and 1 <= levels <= 6):
            raise ValueError(f"levels must be an integer in [1, 6], got {levels!r}")
        if not (isinstance(hidden, int) and hidden >= 1):
            raise ValueError(f"hidden must be a positive integer, got {hidden!r}")

    def regions_and_weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B×C×H×W → (B×R×C L2-normalised region MACs, B×R positive weights)."""
        regions = F.normalize(Fn.region_descriptors(x, Fn.rmac_regions(*x.shape[-2:], self.levels)), dim=2)
        # the global descriptor is what the head gives without attention: R-MAC
        context = F.normalize(regions.sum(1, keepdim=True), dim=2).expand_as(regions)
        k = torch.cat([regions, context], 2)
        return regions, positive(self.score(torch.tanh(self.hidden(k))))[..., 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        regions, w = self.regions_and_weights(x)
        return (w[..., None] * regions).sum(1) / w.sum(1, keepdim=True)
