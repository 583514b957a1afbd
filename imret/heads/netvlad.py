"""Input-independent attention + NetVLAD (ICSA / IA), with SE and CBAM as the
baseline modules in the same slot.

feature map → per-location L2 (see PLACEMENTS) → attention module (element-wise weights) →
1×1 reduction to ``dim`` channels (0: none) → NetVLAD (soft assignment to K
clusters, residual sums, intra-normalisation) → K·dim vector (L2 in the extractor).

IA learns a C×S×S weight tensor, ICSA a C-vector times an S×S map; both are
input-independent and are resized bilinearly to the actual map size, so maps of
any size work (S, ``size``, is the grid they are learned on). The attention sits
after the per-location L2, so that its spatial part is not divided out again, and in
front of NetVLAD as the paper puts it: the weights scale the local descriptors that
NetVLAD assigns and takes residuals of. That is not a weight on the residual sums:
a location weighted 0 still adds −a_k(0)·c_k to every cluster's sum (the reduction has
a bias, and the soft assignment of a zero vector still sums to 1). Weighting the
residuals themselves (Σ s_n a_k(n)(x_n − c_k), as CRN does) was measured once on
paris6k-sub and changed nothing (ICSA, 150 label-free steps: 86.0 Medium / 25.4 Hard
against 86.0 / 25.7), so the paper's order stays. All modules start as the identity.

The reduction and the clusters want data: ``init_from_features`` sets the
reduction to the PCA of training descriptors and the clusters to their k-means,
as NetVLAD does; ``imret train`` calls it before the first step. Untrained, the
reduction is a fixed random orthogonal projection and the clusters fixed random
points, which give a usable but weaker descriptor.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.registry import HEADS, Registry
from . import functional as Fn
from .common import AttentionHead, Reweighting, ones_through_softplus, positive

ATTENTION: Registry[type[nn.Module]] = Registry("attention module")

# Where the attention module sits relative to NetVLAD's per-location L2 normalisation.
# 'after-l2' (default): the weights act on unit local descriptors, so a location's
# spatial weight survives as the length of its descriptor (and a channel weight as a
# fixed anisotropic scaling of the descriptor space); placed before the L2, the
# normalisation would divide the spatial part out again: a weight common to all of a
# location's channels cancels exactly, leaving only the channel profile. 'no-l2' drops the
# per-location L2 (NetVLAD's published models normalise their inputs, "preL2"): a location
# then weighs by its activation, as it does under GeM, and the attention acts on the raw map.
# Measured as an ablation row, not shipped (docs/attention-heads.md).
PLACEMENTS = ("after-l2", "before-l2", "no-l2")


def _fit_to(weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Resize a 1×c×S×S weight grid bilinearly to x's spatial size."""
    if weights.shape[-2:] == x.shape[-2:]:
        return weights
    return F.interpolate(weights, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeds (Arthur & Vassilvitskii): each next seed drawn with probability
    ∝ squared distance to the nearest seed so far. faiss seeds at random, which
    often leaves two centroids in one group and one between two."""
    seeds = [x[rng.integers(len(x))]]
    d2 = ((x - seeds[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        i = rng.choice(len(x), p=d2 / total) if total > 0 else rng.integers(len(x))
        seeds.append(x[i])
        d2 = np.minimum(d2, ((x - x[i]) ** 2).sum(1))
    return np.ascontiguousarray(np.stack(seeds), dtype=np.float32)


@ATTENTION.register("none")
class NoAttention(nn.Module):
    def __init__(self, channels: int, size: int, reduction: int):
        super().__init__()

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(x[:, :1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@ATTENTION.register("ia")
class InputIndependentAttention(Reweighting):
    """IA: a learned C×S×S weight tensor applied element-wise."""

    input_independent = True

    def __init__(self, channels: int, size: int, reduction: int):
        super().__init__()
        self.theta = ones_through_softplus(channels, size, size)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        return _fit_to(positive(self.theta)[None], x)


@ATTENTION.register("icsa")
class ChannelSpatialAttention(Reweighting):
    """ICSA: a learned C×1×1 channel vector times a learned 1×S×S spatial map."""

    input_independent = True

    def __init__(self, channels: int, size: int, reduction: int):
        super().__init__()
        self.channel = ones_through_softplus(channels)
        self.spatial = ones_through_softplus(size, size)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        return positive(self.channel)[None, :, None, None] * _fit_to(positive(self.spatial)[None, None], x)


@ATTENTION.register("se")
class SqueezeExcitation(Reweighting):
    """SE (Hu et al. 2018), the standard module: channel weights
    sigmoid(W2·relu(W1·mean(x))), a bottleneck of C/``reduction`` units (PyTorch's
    default initialisation, so an untrained SE already rescales channels by ~0.5)."""

    def __init__(self, channels: int, size: int, reduction: int):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze = nn.Linear(channels, hidden)
        self.excite = nn.Linear(hidden, channels)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.excite(torch.relu(self.squeeze(x.mean((2, 3))))))[..., None, None]


@ATTENTION.register("cbam")
class CBAM(Reweighting):
    """CBAM (Woo et al. 2018), the standard module: channel weights
    sigmoid(MLP(mean(x)) + MLP(max(x))) through a shared C/``reduction`` bottleneck,
    then spatial weights sigmoid(conv7×7([mean_c, max_c])) of the channel-weighted map."""

    def __init__(self, channels: int, size: int, reduction: int):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        self.spatial = nn.Conv2d(2, 1, 7, padding=3)

    def channel_weights(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(x.mean((2, 3))) + self.mlp(x.amax((2, 3))))[..., None, None]

    def spatial_weights(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.spatial(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        c = self.channel_weights(x)
        return c * self.spatial_weights(x * c)


@HEADS.register("netvlad")
class AttentiveNetVLAD(AttentionHead):
    def __init__(self, in_channels: int, attention: str = "none", clusters: int = 16, dim: int = 128,
                 size: int = 8, reduction: int = 16, placement: str = "after-l2"):
        d = dim or in_channels
        super().__init__(clusters * d)
        self.placement = placement
        self.attention = ATTENTION.get(attention)(in_channels, size, reduction)
        self.reduce = None
        if dim:
            self.reduce = nn.Conv2d(in_channels, dim, 1)
            nn.init.orthogonal_(self.reduce.weight)
            nn.init.zeros_(self.reduce.bias)
        # Untrained clusters: random points at the scale of projected unit vectors.
        scale = math.sqrt(d / in_channels)
        centroids = F.normalize(torch.randn(clusters, d), dim=1) * scale
        self.centroids = nn.Parameter(centroids)
        self.assign_weight = nn.Parameter(torch.empty(clusters, d))
        self.assign_bias = nn.Parameter(torch.empty(clusters))
        self._set_assignment(centroids, alpha=1.0 / scale**2)

    @staticmethod
    def validate(attention: str = "none", clusters: int = 16, dim: int = 128, size: int = 8,
                 reduction: int = 16, placement: str = "after-l2") -> None:
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {list(PLACEMENTS)}, got {placement!r}")
        if attention not in ATTENTION:
            raise ValueError(f"unknown attention module {attention!r}; known: {', '.join(ATTENTION.names())}")
        for name, v, lo in (("clusters", clusters, 1), ("size", size, 1), ("reduction", reduction, 1),
                            ("dim", dim, 0)):
            if not (isinstance(v, int) and v >= lo):
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")

    @torch.no_grad()
    def _set_assignment(self, centroids: torch.Tensor, alpha: float) -> None:
        # NetVLAD's initialisation: softmax_k(2α c_k·x − α|c_k|²) is the soft nearest centroid
        self.centroids.copy_(centroids)
        self.assign_weight.copy_(2 * alpha * centroids)
        self.assign_bias.copy_(-alpha * centroids.pow(2).sum(1))

    def input_independent_parameters(self) -> list[nn.Parameter]:
        return list(self.attention.parameters()) if getattr(self.attention, "input_independent", False) else []

    def weighted(self, x: torch.Tensor) -> torch.Tensor:
        """B×C×H×W backbone map → the attended map, per-location L2-normalised unless 'no-l2'."""
        if self.placement == "after-l2":
            return self.attention(F.normalize(x, dim=1))
        if self.placement == "no-l2":
            return self.attention(x)
        return F.normalize(self.attention(x), dim=1)

    def local_descriptors(self, x: torch.Tensor) -> torch.Tensor:
        """B×C×H×W → B×d×H×W descriptors that NetVLAD aggregates."""
        x = self.weighted(x)
        return self.reduce(x) if self.reduce is not None else x

    def vlad(self, x: torch.Tensor) -> torch.Tensor:
        """B×C×H×W → B×K×d intra-normalised residual sums."""
        return Fn.netvlad(self.local_descriptors(x), self.centroids, self.assign_weight, self.assign_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vlad(x).flatten(1)

    @torch.no_grad()
    def init_from_features(self, maps: Sequence[torch.Tensor], seed: int = 0, max_samples: int = 50_000,
                           cluster_maps: Sequence[torch.Tensor] | None = None) -> None:
        """PCA reduction and k-means clusters from the local descriptors of ``maps``
        (1×C×h×w backbone maps of training images); ``cluster_maps``: the clusters from
        these maps' descriptors instead (reduced by the PCA of ``maps``).

        Clusters fit on photos of a place describe every photo of that place worse than
        clusters fit elsewhere: its residuals to centroids at the mean of the place's features
        cancel (``benchmarks/bench_netvlad_start.py``)."""
        import faiss

        def sample(ms: Sequence[torch.Tensor]) -> torch.Tensor:
            x = torch.cat([self.weighted(m.float()).flatten(2)[0].T.cpu() for m in ms])
            if len(x) > max_samples:
                x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_samples]]
            return x.double().cpu()

        x = sample(maps)
        if self.reduce is not None:
            mean = x.mean(0)
            _, vecs = torch.linalg.eigh(torch.cov(x.T))
            proj = vecs[:, -self.reduce.out_channels:].flip(1).T  # top components first
            self.reduce.weight.copy_(proj[..., None, None].to(self.reduce.weight))
            self.reduce.bias.copy_((-(proj @ mean)).to(self.reduce.bias))
        if cluster_maps is not None:
            x = sample(cluster_maps)
        if self.reduce is not None:
            x = x @ proj.T - proj @ mean
        k = self.centroids.shape[0]
        if len(x) < k:
            raise ValueError(f"k-means for {k} clusters needs at least {k} local descriptors, got {len(x)}")
        data = np.ascontiguousarray(x.float().numpy())
        km = faiss.Kmeans(data.shape[1], k, niter=25, seed=seed, verbose=False)
        km.train(data, init_centroids=_kmeans_pp(data, k, np.random.default_rng(seed)))
        centroids = torch.from_numpy(km.centroids.copy())
        # α such that the nearest cluster takes on average 100× the weight of the second
        d2, _ = torch.cdist(torch.from_numpy(data), centroids).pow(2).topk(2, dim=1, largest=False)
        alpha = math.log(100.0) / max(float((d2[:, 1] - d2[:, 0]).mean()), 1e-6)
        self._set_assignment(centroids.to(self.centroids), alpha)
