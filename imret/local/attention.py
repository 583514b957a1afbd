"""DELF's attention network: a score ≥ 0 for every location of a dense feature map.

Two 1×1 convolutions with a ReLU between them and a softplus after (Noh et al. 2017).
Untrained, it is initialised to score a feature by its L2 norm, as DELF without
attention does: the first layer holds m random unit directions u and their negatives,
so its ReLU outputs sum to Σ|u·f|, which is proportional to ‖f‖ on average over
directions; the second layer scales that sum to ‖f‖. Training (``imret.local.train``)
starts from there.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _mean_abs_projection(dim: int) -> float:
    """E|u₁| for u uniform on the unit sphere of R^dim: E|u·f| = ‖f‖ times this."""
    return math.exp(math.lgamma(dim / 2) - math.lgamma((dim + 1) / 2)) / math.sqrt(math.pi)


class Attention(nn.Module):
    """B×C×h×w features → B×1×h×w scores (softplus, so ≥ 0)."""

    def __init__(self, channels: int, hidden: int = 512, seed: int = 0):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 1)
        self.conv2 = nn.Conv2d(hidden, 1, 1)
        self.init_norm_like(seed)

    @torch.no_grad()
    def init_norm_like(self, seed: int = 0) -> None:
        """Set the weights so that score(f) ≈ ‖f‖ (see the module docstring)."""
        c, hidden = self.conv1.in_channels, self.conv1.out_channels
        m = hidden // 2
        g = torch.Generator().manual_seed(seed)
        u = F.normalize(torch.randn(m, c, generator=g), dim=1)
        w1 = torch.zeros(hidden, c)
        w1[:m], w1[m:2 * m] = u, -u
        self.conv1.weight.copy_(w1[:, :, None, None])
        self.conv1.bias.zero_()
        self.conv2.weight.fill_(1.0 / (m * _mean_abs_projection(c)))
        self.conv2.weight[:, 2 * m:] = 0.0
        self.conv2.bias.zero_()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.conv2(F.relu(self.conv1(features))))
