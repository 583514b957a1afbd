"""Matching local features and verifying the matches geometrically.

Tentative matches are nearest neighbours in descriptor space that pass a ratio test
(and, optionally, are mutual nearest neighbours); RANSAC (OpenCV's USAC) then fits
an affine map or a homography from query keypoints to result keypoints and counts
the matches it explains: the inliers. Keypoints are compared in the frame extraction
resized each image to (longest side ``max_size``), so the pixel threshold means the
same for every image size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .features import LocalFeatures

MODELS = ("affine", "homography")


@dataclass(frozen=True)
class VerifyConfig:
    """``ratio``: Lowe's ratio test on descriptor distances (1 turns it off);
    ``mutual``: keep only mutual nearest neighbours; ``model``: 'affine' or
    'homography'; ``threshold``: RANSAC reprojection error in pixels of the
    ``frame``-sized image; ``min_inliers``: fewer inliers count as not verified."""

    ratio: float = 0.9
    mutual: bool = True
    model: str = "affine"
    threshold: float = 12.0
    frame: int = 512
    max_iters: int = 2000
    confidence: float = 0.999
    min_inliers: int = 8

    def __post_init__(self):
        from ..config import ConfigError

        if self.model not in MODELS:
            raise ConfigError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if not (0 < self.ratio <= 1):
            raise ConfigError(f"ratio must be in (0, 1], got {self.ratio}")
        if not self.threshold > 0 or not self.frame > 0:
            raise ConfigError(f"threshold and frame must be positive, got {self.threshold}, {self.frame}")


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


def match(q: np.ndarray, d: np.ndarray, ratio: float = 0.9, mutual: bool = True,
          sims: np.ndarray | None = None) -> np.ndarray:
    """Tentative matches between unit-row descriptor sets → M×2 (query row, db row).
    ``sims``: q·dᵀ when already computed (it is changed in place)."""
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


def _frame_scale(f: LocalFeatures, frame: int) -> float:
    return frame / max(f.size)


def fit_model(src: np.ndarray, dst: np.ndarray, cfg: VerifyConfig) -> tuple[np.ndarray | None, np.ndarray]:
    """RANSAC (USAC MAGSAC++) from N×2 ``src`` to ``dst`` points → (model, N bool inliers)."""
    import cv2

    need = 3 if cfg.model == "affine" else 4
    none = np.zeros(len(src), bool)
    if len(src) < need:
        return None, none
    src, dst = np.ascontiguousarray(src, np.float32), np.ascontiguousarray(dst, np.float32)
    if cfg.model == "affine":
        model, mask = cv2.estimateAffine2D(src, dst, method=cv2.USAC_MAGSAC, ransacReprojThreshold=cfg.threshold,
                                           maxIters=cfg.max_iters, confidence=cfg.confidence)
    else:
        model, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, cfg.threshold,
                                         maxIters=cfg.max_iters, confidence=cfg.confidence)
    if model is None or mask is None:
        return None, none
    return model.astype(np.float64), mask.ravel().astype(bool)


def verify(query: LocalFeatures, result: LocalFeatures, cfg: VerifyConfig = VerifyConfig(),
           sims: np.ndarray | None = None) -> Verification:
    """Match ``query`` against ``result`` and count the matches one geometric model explains.
    ``sims``: the descriptors' similarity matrix, when already computed."""
    pairs = match(query.descriptors, result.descriptors, cfg.ratio, cfg.mutual, sims)
    points = np.concatenate([query.xy[pairs[:, 0]], result.xy[pairs[:, 1]]], 1).astype(np.float32)
    sq, sr = _frame_scale(query, cfg.frame), _frame_scale(result, cfg.frame)
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
