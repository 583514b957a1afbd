"""Global poolings as pure functions: B×C×H×W feature map → B×C descriptor.

Outputs are not normalised: the extractor L2-normalises once, after all heads.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def spoc(x: torch.Tensor, center_prior: bool = False) -> torch.Tensor:
    """Sum pooling (Babenko & Lempitsky), optionally weighted by a centred Gaussian."""
    if not center_prior:
        return x.mean((2, 3))
    h, w = x.shape[-2:]
    ys = torch.arange(h, dtype=x.dtype, device=x.device) - (h - 1) / 2
    xs = torch.arange(w, dtype=x.dtype, device=x.device) - (w - 1) / 2
    sigma = min(h, w) / 3
    prior = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma**2))
    return (x * prior).sum((2, 3)) / prior.sum()


def mac(x: torch.Tensor) -> torch.Tensor:
    """Max pooling over all positions (Tolias et al.)."""
    return x.amax((2, 3))


def gem(x: torch.Tensor, p: float | torch.Tensor = 3.0, eps: float = 1e-6,
        mask: torch.Tensor | None = None) -> torch.Tensor:
    """Generalised mean (Radenović et al.): p=1 is average, p→∞ is max.

    ``mask`` (B×1×H×W bool) restricts the mean to the positions it keeps.
    Computed relative to each channel's maximum so that large p cannot overflow."""
    x = x.clamp(min=eps)
    if mask is None:
        peak = x.amax((2, 3), keepdim=True).detach()
        return (x / peak).pow(p).mean((2, 3)).pow(1.0 / p) * peak[..., 0, 0]
    m = mask.to(x.dtype)
    peak = (x * m).amax((2, 3), keepdim=True).detach().clamp(min=eps)
    mean = ((x / peak).pow(p) * m).sum((2, 3)) / m.sum((2, 3)).clamp(min=1.0)
    return mean.pow(1.0 / p) * peak[..., 0, 0]


def rmac_regions(h: int, w: int, levels: int = 3, overlap: float = 0.4) -> list[tuple[int, int, int, int]]:
    """The R-MAC region grid (Tolias et al.) on an h×w map, as (top, left, height, width).

    At level l square regions of side 2·min(h,w)/(l+1) are laid out uniformly with
    about ``overlap`` between neighbours; the long side gets extra regions so that
    the overlap holds. The first region is the whole map.
    """
    regions = [(0, 0, h, w)]
    side = min(h, w)
    steps = torch.arange(2, 8, dtype=torch.float64)
    b = (max(h, w) - side) / (steps - 1)
    idx = int(torch.argmin(torch.abs((side**2 - side * b) / side**2 - overlap)))
    extra_w = idx + 1 if h < w else 0
    extra_h = idx + 1 if h > w else 0
    for level in range(1, levels + 1):
        wl = math.floor(2 * side / (level + 1))
        if wl == 0:
            continue

        def starts(extent: int, extra: int) -> list[int]:
            n = level + extra
            step = 0.0 if n == 1 else (extent - wl) / (n - 1)
            return [math.floor(i * step) for i in range(n)]

        for top in starts(h, extra_h):
            for left in starts(w, extra_w):
                regions.append((top, left, wl, wl))
    return regions


def region_descriptors(x: torch.Tensor, regions, pool=mac) -> torch.Tensor:
    """B×C×H×W, R regions → B×R×C pooled region descriptors."""
    return torch.stack([pool(x[:, :, t : t + hh, l : l + ww]) for t, l, hh, ww in regions], 1)


def rmac(x: torch.Tensor, levels: int = 3, eps: float = 1e-6) -> torch.Tensor:
    """Sum of L2-normalised MAC descriptors of the R-MAC regions."""
    regions = rmac_regions(x.shape[-2], x.shape[-1], levels)
    r = region_descriptors(x, regions)
    return (r / (r.norm(dim=-1, keepdim=True) + eps)).sum(1)


def crow(x: torch.Tensor, a: float = 2.0, b: float = 2.0, eps: float = 1e-6) -> torch.Tensor:
    """Cross-dimensional weighting (Kalantidis et al.): spatial weights from the
    normalised channel sum, channel weights from the inverse sparsity of each map."""
    s = x.sum(1, keepdim=True)
    z = s.pow(a).sum((2, 3), keepdim=True).pow(1.0 / a)
    spatial = (s / (z + eps)).pow(1.0 / b)
    q = (x > 0).float().mean((2, 3))
    channel = torch.log(q.sum(1, keepdim=True) / (q + eps) + eps)
    return (x * spatial).sum((2, 3)) * channel


def l2n(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x / (x.norm(dim=-1, keepdim=True) + eps)


def max_mask(x: torch.Tensor, votes: float = 0.0) -> torch.Tensor:
    """B×C×H×W → B×1×H×W bool: the positions that hold the maximum (first argmax) of
    more than ``votes``·C/(H·W) channels, i.e. more than ``votes`` times a uniform
    share of the live channels' maxima (0: at least one channel, Do et al.'s MAX-mask
    on maps with fewer channels than positions). With many more channels than
    positions (Lite0: 1280 channels, ~200 positions) nearly every position holds some
    channel's maximum, and only a share threshold drops the meaningless ones.
    Channels that are zero everywhere vote for nothing; a map where no position passes
    keeps the position(s) with the most votes."""
    b, c, h, w = x.shape
    flat = x.flatten(2)
    live = (flat.amax(2) > 0).to(x.dtype)
    counts = torch.zeros(b, h * w, dtype=x.dtype, device=x.device)
    counts.scatter_add_(1, flat.argmax(2), live)
    share = votes * live.sum(1, keepdim=True) / (h * w)
    keep = counts > share if votes > 0 else counts > 0
    keep |= ~keep.any(1, keepdim=True) & (counts == counts.amax(1, keepdim=True))
    return keep.view(b, 1, h, w)


def self_similarity(x: torch.Tensor, window: int = 5) -> torch.Tensor:
    """B×C×H×W → B×window²×H×W: cosine similarity of each location's descriptor with
    each location of the window×window box around it (0 where the box leaves the map)."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"self-similarity window must be odd and positive, got {window}")
    r = window // 2
    h, w = x.shape[-2:]
    n = F.normalize(x, dim=1)
    padded = F.pad(n, (r, r, r, r))
    return torch.stack([(n * padded[:, :, dy:dy + h, dx:dx + w]).sum(1)
                        for dy in range(window) for dx in range(window)], 1)


def netvlad(x: torch.Tensor, centroids: torch.Tensor, assign_weight: torch.Tensor,
            assign_bias: torch.Tensor) -> torch.Tensor:
    """NetVLAD (Arandjelović et al.): B×C×H×W local descriptors, K×C centroids and
    the K×C, K soft-assignment parameters → B×K×C, each cluster's residual sum
    L2-normalised (intra-normalisation)."""
    desc = x.flatten(2)
    assign = torch.softmax(torch.einsum("kc,bcn->bkn", assign_weight, desc) + assign_bias[None, :, None], 1)
    vlad = torch.einsum("bkn,bcn->bkc", assign, desc) - assign.sum(2)[..., None] * centroids[None]
    return F.normalize(vlad, dim=2)
