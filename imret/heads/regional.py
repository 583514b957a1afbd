"""Context-aware regional attention (Kim, Yoon et al., "Regional attention based deep
feature for image retrieval", BMVC 2018).

R-MAC regions (``levels`` scales of the R-MAC grid; the whole map is region 0) are
max-pooled; each region descriptor r is L2-normalised, optionally PCA-whitened
(``pca``: R-MAC's per-region PCA, learned by ``init_from_features`` on training
regions; 0 keeps the raw unit vectors) and L2-normalised again. The attention
network scores each region from k = [r, g], where g is the global feature: the
L2-normalised MAC of the whole map passed through the same region pipeline, so
that a region is judged against the image it is part of:

    weight = softplus(Wc·tanh(Wr·k + br) + bc)   (kept above 1e-6)

and the descriptor is the weighted sum of the region vectors (a weighted mean;
the extractor's L2 makes the two the same). Wc starts at zero, so the untrained
head weighs every region alike and gives R-MAC. The paper trains the network
with cross-entropy over landmark classes with the CNN frozen: ``imret train
--loss cross-entropy`` with the backbone frozen is that recipe.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.registry import HEADS
from . import functional as Fn
from .common import AttentionHead, identity_score, positive


@HEADS.register("regional")
class RegionalAttention(AttentionHead):
    def __init__(self, in_channels: int, levels: int = 3, hidden: int = 256, pca: int = 0):
        d = pca or in_channels
        super().__init__(d)
        self.levels = levels
        self.pca = nn.Linear(in_channels, pca) if pca else None
        if self.pca is not None:
            # untrained: a fixed random orthogonal projection (replaced by the PCA of training regions)
            nn.init.orthogonal_(self.pca.weight)
            nn.init.zeros_(self.pca.bias)
        self.hidden = nn.Linear(2 * d, hidden)
        self.score = identity_score(nn.Linear(hidden, 1))

    @staticmethod
    def validate(levels: int = 3, hidden: int = 256, pca: int = 0) -> None:
        if not (isinstance(levels, int) and 1 <= levels <= 6):
            raise ValueError(f"levels must be an integer in [1, 6], got {levels!r}")
        if not (isinstance(hidden, int) and hidden >= 1):
            raise ValueError(f"hidden must be a positive integer, got {hidden!r}")
        if not (isinstance(pca, int) and pca >= 0):
            raise ValueError(f"pca must be a non-negative integer (0: no per-region PCA), got {pca!r}")

    def _post(self, r: torch.Tensor) -> torch.Tensor:
        r = F.normalize(r, dim=-1)
        return F.normalize(self.pca(r), dim=-1) if self.pca is not None else r

    def regions_and_weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B×C×H×W → (B×R×d region vectors, B×R positive weights)."""
        regions = self._post(Fn.region_descriptors(x, Fn.rmac_regions(*x.shape[-2:], self.levels)))
        context = self._post(Fn.mac(x))[:, None].expand_as(regions)
        k = torch.cat([regions, context], 2)
        return regions, positive(self.score(torch.tanh(self.hidden(k))))[..., 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        regions, w = self.regions_and_weights(x)
        return (w[..., None] * regions).sum(1) / w.sum(1, keepdim=True)

    @torch.no_grad()
    def init_from_features(self, maps: Sequence[torch.Tensor], seed: int = 0) -> None:
        """R-MAC's per-region PCA-whitening from the regions of ``maps`` (1×C×h×w)."""
        if self.pca is None:
            return
        r = torch.cat([F.normalize(Fn.region_descriptors(m.float(), Fn.rmac_regions(*m.shape[-2:], self.levels)),
                                   dim=-1)[0] for m in maps]).double()
        if len(r) <= self.pca.out_features:
            raise ValueError(f"per-region PCA to {self.pca.out_features} dimensions needs more than that many "
                             f"regions, got {len(r)}")
        mean = r.mean(0)
        vals, vecs = torch.linalg.eigh(torch.cov(r.T))
        top = vals.flip(0)[: self.pca.out_features].clamp(min=1e-12)
        proj = vecs.flip(1)[:, : self.pca.out_features].T / top.sqrt()[:, None]
        self.pca.weight.copy_(proj.to(self.pca.weight))
        self.pca.bias.copy_((-(proj @ mean)).to(self.pca.bias))
