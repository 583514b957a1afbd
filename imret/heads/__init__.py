"""Heads: B×C×H×W feature map → B×D global descriptor (before L2 normalisation).

Each head is an ``nn.Module`` registered by name; its constructor takes the
backbone's channel count first, then its own keyword parameters, which a
``HeadConfig`` carries.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import check_params  # noqa: F401  (moved to imret.config)
from ..core.registry import HEADS
from . import functional as Fn


def build_head(cfg, in_channels: int) -> nn.Module:
    # Learnable heads draw their initial weights from a fixed seed, so that a config
    # alone rebuilds the same untrained head in any process (an index made with an
    # untrained head is searched with the same one).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return HEADS.get(cfg.name)(in_channels, **cfg.params)


class _Pooling(nn.Module):
    trainable = False

    def __init__(self, in_channels: int):
        super().__init__()
        self.out_dim = in_channels


@HEADS.register("spoc")
class SPoC(_Pooling):
    def __init__(self, in_channels: int, center_prior: bool = False):
        super().__init__(in_channels)
        self.center_prior = center_prior

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Fn.spoc(x, self.center_prior)


@HEADS.register("mac")
class MAC(_Pooling):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Fn.mac(x)


@HEADS.register("gem")
class GeM(_Pooling):
    """GeM with p fixed, or learned when ``learn_p``."""

    def __init__(self, in_channels: int, p: float = 3.0, learn_p: bool = False):
        super().__init__(in_channels)
        if p <= 0:
            raise ValueError(f"GeM p must be positive, got {p}")
        self.trainable = learn_p
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learn_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Fn.gem(x, self.p)


@HEADS.register("rmac")
class RMAC(_Pooling):
    def __init__(self, in_channels: int, levels: int = 3):
        super().__init__(in_channels)
        if not 1 <= levels <= 6:
            raise ValueError(f"R-MAC levels must be in [1, 6], got {levels}")
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Fn.rmac(x, self.levels)


@HEADS.register("crow")
class CroW(_Pooling):
    def __init__(self, in_channels: int, a: float = 2.0, b: float = 2.0):
        super().__init__(in_channels)
        self.a, self.b = a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Fn.crow(x, self.a, self.b)


# Attention heads register themselves on import.
from . import dagf, netvlad, regional, selfsim  # noqa: E402,F401
