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


def gem(x: torch.Tensor, p: float | torch.Tensor = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised mean (Radenović et al.): p=1 is average, p→∞ is max.

    Computed relative to each channel's maximum so that large p cannot overflow."""
    x = x.clamp(min=eps)
    peak = x.amax((2, 3), keepdim=True).detach()
    return (x / peak).pow(p).mean((2, 3)).pow(1.0 / p) * peak[..., 0, 0]


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
        half = math.floor(wl / 2 - 1)

        def starts(extent: int, extra: int) -> list[int]:
            n = level + extra
            step = 0.0 if n == 1 else (extent - wl) / (n - 1)
            return [int(math.floor(half + i * step) - half) for i in range(n)]

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
