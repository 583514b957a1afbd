"""Matching local features and verifying the matches geometrically.

Tentative matches come from a registered matcher (``MATCHERS``):

- ``distance`` (DELF): each query feature's nearest neighbour among the result's,
  kept when their L2 distance in the PCA space is below ``distance`` (the paper's 0.8);
- ``ratio``: nearest neighbours that pass Lowe's ratio test and, optionally, are
  mutual nearest neighbours (imret's earlier matcher; fewer, cleaner matches).

RANSAC then fits an affine map or a homography from query keypoints to result
keypoints and counts the matches it explains: the inliers. ``method`` 'ransac' is the
plain RANSAC DELF runs (``threshold`` px residual, ``max_iters`` trials), 'magsac'
OpenCV's USAC MAGSAC++. Keypoints are compared in a frame whose longest side is
``frame`` (``upscale`` False: an image smaller than that keeps its own pixels), so the
pixel threshold means the same for every image size.

``VERIFY_CONFIGS`` names the two recipes: 'delf' (distance matcher, affine RANSAC with
a 20 px residual and 1000 trials in ≤1024 px frames, score = inliers) and 'ratio'
(ratio + mutual, MAGSAC++ at 12 px in 512 px frames, score = global + weight · inliers).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.registry import Registry
from .features import LocalFeatures

MODELS = ("affine", "homography")
METHODS = ("ransac", "magsac")
# how a verified result is scored: 'global' = global score + weight · inliers (imret's
# default, which did best on the embedded photo set); 'inliers' = the inlier count (DELF);
# 'verified' = the verified results first, by inliers, then the others by global score
SCORES = ("global", "inliers", "verified")

MATCHERS: Registry = Registry("local-feature matcher")


@dataclass(frozen=True)
class VerifyConfig:
    """``matcher``: a ``MATCHERS`` name; ``distance``: the 'distance' matcher's L2
    bound; ``ratio``: Lowe's ratio test of the 'ratio' matcher (1 turns it off);
    ``mutual``: 'ratio' keeps only mutual nearest neighbours; ``model``: 'affine' or
    'homography'; ``method``: 'ransac' or 'magsac'; ``threshold``: RANSAC residual in
    pixels of the ``frame``-sized image (``upscale``: whether smaller images are
    enlarged to it); ``max_iters``: RANSAC trials; ``min_inliers``: fewer inliers count
    as not verified; ``score``: one of ``SCORES``."""

    matcher: str = "ratio"
    distance: float = 0.8
    ratio: float = 0.9
    mutual: bool = True
    model: str = "affine"
    method: str = "magsac"
    threshold: float = 12.0
    frame: int = 512
    upscale: bool = True
    max_iters: int = 2000
    confidence: float = 0.999
    min_inliers: int = 8
    score: str = "global"

    def __post_init__(self):
        from ..config import ConfigError

        if self.matcher not in MATCHERS:
            raise ConfigError(f"matcher must be one of {', '.join(MATCHERS.names())}, got {self.matcher!r}")
        if self.model not in MODELS:
            raise ConfigError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.score not in SCORES:
            raise ConfigError(f"score must be one of {', '.join(SCORES)}, got {self.score!r}")
        if not (0 < self.ratio <= 1):
            raise ConfigError(f"ratio must be in (0, 1], got {self.ratio}")
        if not (0 < self.distance <= 2):
            raise ConfigError(f"distance must be in (0, 2] (unit descriptors), got {self.distance}")
        if not self.threshold > 0 or not self.frame > 0:
            raise ConfigError(f"threshold and frame must be positive, got {self.threshold}, {self.frame}")
        if not (isinstance(self.max_iters, int) and self.max_iters >= 1):
            raise ConfigError(f"max_iters (RANSAC trials) must be a positive integer, got {self.max_iters!r}")

    def replace(self, **changes) -> "VerifyConfig":
        import dataclasses

        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Verification:
    """One query–result pair. ``pairs``: M×2 (query feature, result feature) indices of the
    tentative matches; ``points``: M×4 float32 (query x, y, result x, y) of those matches
    in original pixels; ``inlier_mask``: M bools; ``model``: the fitted 2×3 affine map
    or 3×3 homography from query pixels to result pixels (None when none was found)."""

    pairs: np.ndarray
    points: np.ndarray
    inlier_mask: np.ndarray
    model: np.ndarray | None

    @property
    def inliers(self) -> int:
        return int(self.inlier_mask.sum())

    @property
    def tentative(self) -> int:
        return len(self.pairs)

    @property
    def inlier_points(self) -> np.ndarray:
        """K×4 (query x, y, result x, y) of the inlier matches."""
        return self.points[self.inlier_mask]

    @property
    def outlier_points(self) -> np.ndarray:
        return self.points[~self.inlier_mask]


def match_distance(q: np.ndarray, d: np.ndarray, distance: float = 0.8, sims: np.ndarray | None = None) -> np.ndarray:
    """DELF's matching: each query row's nearest db row, kept when ‖q − d‖ < ``distance``
    (unit rows) → M×2 (query row, db row). Several query rows may match one db row."""
    if len(q) == 0 or len(d) == 0:
        return np.zeros((0, 2), np.int64)
    sims = q @ d.T if sims is None else sims
    nn = sims.argmax(1)
    best = sims[np.arange(len(q)), nn]
    # unit vectors: ‖a−b‖² = 2 − 2a·b
    qi = np.flatnonzero(2 - 2 * best < distance * distance)
    return np.stack([qi, nn[qi]], 1).astype(np.int64)


def match(q: np.ndarray, d: np.ndarray, ratio: float = 0.9, mutual: bool = True,
          sims: np.ndarray | None = None) -> np.ndarray:
    """Tentative matches of the 'ratio' matcher between unit-row descriptor sets → M×2
    (query row, db row). ``sims``: q·dᵀ when already computed (it is changed in place)."""
    if len(q) == 0 or len(d) == 0:
        return np.zeros((0, 2), np.int64)
    sims = q @ d.T if sims is None else sims
    rows = np.arange(len(q))
    nn = sims.argmax(1)
    keep = np.ones(len(q), bool)
    if mutual:
        keep &= sims.argmax(0)[nn] == rows
    if ratio < 1 and d.shape[0] > 1:
        best = sims[rows, nn]
        sims[rows, nn] = -np.inf
        second = sims.max(1)
        # unit vectors: ‖a−b‖² = 2 − 2a·b
        keep &= np.sqrt(np.clip(2 - 2 * best, 0, None)) <= ratio * np.sqrt(np.clip(2 - 2 * second, 0, None))
    qi = np.flatnonzero(keep)
    return np.stack([qi, nn[qi]], 1).astype(np.int64)


MATCHERS.register("distance")(lambda q, d, cfg, sims=None: match_distance(q, d, cfg.distance, sims))
MATCHERS.register("ratio")(lambda q, d, cfg, sims=None: match(q, d, cfg.ratio, cfg.mutual, sims))


def frame_scale(size: tuple[int, int], frame: int, upscale: bool = True) -> float:
    """The factor taking an image of ``size`` (h, w) into a frame of longest side ``frame``;
    without ``upscale`` an image smaller than the frame keeps its own pixels."""
    s = frame / max(size)
    return s if upscale else min(1.0, s)


def fit_model(src: np.ndarray, dst: np.ndarray, cfg: VerifyConfig) -> tuple[np.ndarray | None, np.ndarray]:
    """RANSAC (``cfg.method``) from N×2 ``src`` to ``dst`` points → (model, N bool inliers)."""
    import cv2

    need = 3 if cfg.model == "affine" else 4
    none = np.zeros(len(src), bool)
    if len(src) < need:
        return None, none
    src, dst = np.ascontiguousarray(src, np.float32), np.ascontiguousarray(dst, np.float32)
    method = cv2.RANSAC if cfg.method == "ransac" else cv2.USAC_MAGSAC
    if cfg.model == "affine":
        model, mask = cv2.estimateAffine2D(src, dst, method=method, ransacReprojThreshold=cfg.threshold,
                                           maxIters=cfg.max_iters, confidence=cfg.confidence)
    else:
        model, mask = cv2.findHomography(src, dst, method, cfg.threshold,
                                         maxIters=cfg.max_iters, confidence=cfg.confidence)
    if model is None or mask is None or not np.isfinite(model).all():
        return None, none  # OpenCV's plain RANSAC gives a NaN map (and 3 inliers) for 3 collinear points
    return model.astype(np.float64), mask.ravel().astype(bool)


def verify(query: LocalFeatures, result: LocalFeatures, cfg: VerifyConfig = VerifyConfig(),
           sims: np.ndarray | None = None) -> Verification:
    """Match ``query`` against ``result`` and count the matches one geometric model explains.
    ``sims``: the descriptors' similarity matrix, when already computed."""
    pairs = MATCHERS.get(cfg.matcher)(query.descriptors, result.descriptors, cfg, sims)
    points = np.concatenate([query.xy[pairs[:, 0]], result.xy[pairs[:, 1]]], 1).astype(np.float32)
    sq, sr = frame_scale(query.size, cfg.frame, cfg.upscale), frame_scale(result.size, cfg.frame, cfg.upscale)
    model, mask = fit_model(points[:, :2] * sq, points[:, 2:] * sr, cfg)
    if model is not None:  # in original pixels: result = (1/sr)·M(sq·query)
        lift, drop = np.diag([sq, sq, 1.0]), np.diag([1 / sr, 1 / sr, 1.0])
        full = np.vstack([model, [0, 0, 1]]) if model.shape == (2, 3) else model
        model = (drop @ full @ lift)[: model.shape[0]]
    return Verification(pairs, points, mask, model)


def verify_many(query: LocalFeatures, results: list[LocalFeatures], cfg: VerifyConfig = VerifyConfig(),
                chunk: int = 4096) -> list[Verification]:
    """``verify`` of one query against many results. The descriptor similarities of several
    results come from one matrix product (a few large products cost less than many small
    ones, most of all on busy cores)."""
    out: list[Verification] = []
    start = 0
    while start < len(results):
        stop, rows = start, 0
        while stop < len(results) and (rows == 0 or rows + len(results[stop]) <= chunk):
            rows += len(results[stop])
            stop += 1
        group = results[start:stop]
        sims = query.descriptors @ np.concatenate([r.descriptors for r in group]).T if rows else None
        edges = np.cumsum([0] + [len(r) for r in group])
        for r, a, b in zip(group, edges[:-1], edges[1:]):
            out.append(verify(query, r, cfg, None if sims is None else np.ascontiguousarray(sims[:, a:b])))
        start = stop
    return out


VERIFY_CONFIGS = {
    "delf": VerifyConfig(matcher="distance", distance=0.8, method="ransac", threshold=20.0, frame=1024,
                         upscale=False, max_iters=1000, score="inliers"),
    "ratio": VerifyConfig(),
}


def get_verify_config(name: str) -> VerifyConfig:
    from ..config import ConfigError

    if name not in VERIFY_CONFIGS:
        raise ConfigError(f"unknown verification {name!r}; known: {', '.join(VERIFY_CONFIGS)}")
    return VERIFY_CONFIGS[name]
