"""DAGF: deep attentive global features.

feature map → attention cascade (a trainable weight per channel, then spatial
attention from global context; order configurable) → scale filters (parallel
stride-1 average filters of several sizes, mixed) → MAX-mask (only the positions
that hold the maximum of many channels) → GeM over the kept positions.

Every part is switched by a parameter (``spatial``, ``channel``, ``scales=1``,
``max_mask``) so that an ablation can add them one at a time. The learnable parts
start as the identity: an untrained DAGF with only attention on is GeM.

Why each part survives the index's PCA-whitening (which undoes any invertible
linear map of the descriptor, a per-dimension rescale included): GeM of a
channel-weighted map is the channel-weighted GeM, so channel weights applied last
("spatial-channel") are cancelled exactly. Applied first (the default,
"channel-spatial"), they decide what the spatial evaluator sees and so which
locations the descriptor is made of. Spatial weights, scale filters and the mask
mix locations before GeM's power, which no linear map of the output undoes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.registry import HEADS
from . import functional as Fn
from .common import AttentionHead, Reweighting, identity_score, ones_through_softplus, positive

ORDERS = {"spatial-channel": ("spatial", "channel"), "channel-spatial": ("channel", "spatial")}


class ContextSpatialAttention(Reweighting):
    """One positive weight per location. The hidden layer mixes each location's
    channels together with the image's channel means, so a location is scored by
    how its channel pattern relates to the image as a whole rather than by its
    energy alone."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(8, channels // reduction)
        self.local = nn.Conv2d(channels, hidden, 1)
        self.context = nn.Linear(channels, hidden, bias=False)
        self.score = identity_score(nn.Conv2d(hidden, 1, 1))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """B×C×H×W → B×1×H×W, all positive."""
        ctx = self.context(x.mean((2, 3)))[..., None, None]
        return positive(self.score(torch.relu(self.local(x) + ctx)))


class ChannelWeights(Reweighting):
    """A trainable positive weight per feature map, independent of the input."""

    def __init__(self, channels: int):
        super().__init__()
        self.theta = ones_through_softplus(channels)

    def weights(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """1×C×1×1, all positive."""
        return positive(self.theta)[None, :, None, None]


class ScaleFilters(nn.Module):
    """Stride-1 average filters of sizes 1, 3, 5, … over the map, their responses
    mixed by learned softmax weights (equal at the start): a location then also
    speaks for the neighbourhoods around it at several scales."""

    def __init__(self, n: int):
        super().__init__()
        self.sizes = tuple(2 * i + 1 for i in range(n))
        self.mix = nn.Parameter(torch.zeros(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.mix, 0)
        out = w[0] * x
        for wk, k in zip(w[1:], self.sizes[1:]):
            out = out + wk * F.avg_pool2d(x, k, 1, k // 2, count_include_pad=False)
        return out


@HEADS.register("dagf")
class DAGF(AttentionHead):
    def __init__(self, in_channels: int, spatial: bool = True, channel: bool = True,
                 order: str = "channel-spatial", scales: int = 3, max_mask: bool = True,
                 p: float = 3.0, reduction: int = 16, mask_votes: float = 1.0):
        super().__init__(in_channels)
        self.spatial = ContextSpatialAttention(in_channels, reduction) if spatial else None
        self.channel = ChannelWeights(in_channels) if channel else None
        self.cascade = tuple(part for part in ORDERS[order] if getattr(self, part) is not None)
        self.scales = ScaleFilters(scales) if scales > 1 else None
        self.max_mask = max_mask
        self.mask_votes = float(mask_votes)
        self.p = float(p)

    @staticmethod
    def validate(spatial: bool = True, channel: bool = True, order: str = "channel-spatial", scales: int = 3,
                 max_mask: bool = True, p: float = 3.0, reduction: int = 16, mask_votes: float = 1.0) -> None:
        if not mask_votes >= 0:
            raise ValueError(f"mask_votes must be >= 0, got {mask_votes}")
        if order not in ORDERS:
            raise ValueError(f"order must be one of {sorted(ORDERS)}, got {order!r}")
        if not all(isinstance(v, bool) for v in (spatial, channel, max_mask)):
            raise ValueError("spatial, channel and max_mask must be true or false")
        if not (isinstance(scales, int) and 1 <= scales <= 6):
            raise ValueError(f"scales must be an integer in [1, 6] (1: no scale filters), got {scales!r}")
        if not p > 0:
            raise ValueError(f"p must be positive, got {p}")
        if not (isinstance(reduction, int) and reduction >= 1):
            raise ValueError(f"reduction must be a positive integer, got {reduction!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for part in self.cascade:
            x = getattr(self, part)(x)
        if self.scales is not None:
            x = self.scales(x)
        return Fn.gem(x, self.p, mask=Fn.max_mask(x, self.mask_votes) if self.max_mask else None)
