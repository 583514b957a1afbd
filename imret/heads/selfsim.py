"""Self-similarity embedding (after Kim et al., "Learning self-similarity in space
and time as generalized motion for video action recognition", and Lee et al.,
"Learning to compose self-similarities" for retrieval).

The cosine self-similarity of each location with its window×window neighbourhood
(a descriptor of local structure that is stable under appearance change) is
compressed by small convolutions into a dense map, fused with the feature map
(concatenate + 1×1 conv, or add), then pooled by GeM. The fusion starts as the
identity on the feature map with zero weight on the self-similarity branch, so
the untrained head is GeM.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.registry import HEADS, Registry
from . import functional as Fn
from .common import AttentionHead

FUSIONS: Registry[type[nn.Module]] = Registry("self-similarity fusion")


@FUSIONS.register("concat")
class ConcatFusion(nn.Module):
    """[x, s] → 1×1 conv back to C channels, initialised to pass x through."""

    def __init__(self, channels: int, ss_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels + ss_channels, channels, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, :channels, 0, 0] = torch.eye(channels)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x, s], 1))


@FUSIONS.register("add")
class AddFusion(nn.Module):
    """x + 1×1 conv(s), the conv starting at zero."""

    def __init__(self, channels: int, ss_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(ss_channels, channels, 1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return x + self.conv(s)


@HEADS.register("selfsim")
class SelfSimilarityEmbedding(AttentionHead):
    def __init__(self, in_channels: int, window: int = 5, hidden: int = 32, channels: int = 64,
                 fusion: str = "concat", p: float = 3.0):
        super().__init__(in_channels)
        self.window = window
        self.encode = nn.Sequential(
            nn.Conv2d(window * window, hidden, 1), nn.ReLU(),
            nn.Conv2d(hidden, channels, 3, padding=1), nn.ReLU(),
        )
        self.fuse = FUSIONS.get(fusion)(in_channels, channels)
        self.p = float(p)

    @staticmethod
    def validate(window: int = 5, hidden: int = 32, channels: int = 64, fusion: str = "concat",
                 p: float = 3.0) -> None:
        if not (isinstance(window, int) and window >= 3 and window % 2 == 1):
            raise ValueError(f"window must be an odd integer >= 3, got {window!r}")
        for name, v in (("hidden", hidden), ("channels", channels)):
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; known: {', '.join(FUSIONS.names())}")
        if not p > 0:
            raise ValueError(f"p must be positive, got {p}")

    def similarity_map(self, x: torch.Tensor) -> torch.Tensor:
        """B×C×H×W → B×channels×H×W dense self-similarity features."""
        return self.encode(Fn.self_similarity(x, self.window))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Fn.gem(self.fuse(x, self.similarity_map(x)), self.p)
