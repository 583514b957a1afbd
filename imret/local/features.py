"""``LocalFeatures``: the keypoints, scales, scores and descriptors of one image."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LocalFeatures:
    """Features of one image. ``xy``: N×2 keypoints (x, y) in pixels of the original
    image; ``scales``: N pyramid scales; ``scores``: N attention scores; ``descriptors``:
    N×D float32, unit rows; ``size``: (height, width) of the original image."""

    xy: np.ndarray
    scales: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray
    size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.scores)

    def replace_descriptors(self, descriptors: np.ndarray) -> "LocalFeatures":
        return LocalFeatures(self.xy, self.scales, self.scores, descriptors, self.size)
