"""Descriptor post-processing: L2 normalisation, PCA-whitening and centring.

Descriptors are float32 rows (N×D). ``PCAWhitening.fit`` and ``Centring.fit`` return
a new fitted object; ``apply`` maps N×D → N×d rows, L2-normalised. Both are learned on
the database at build time and stored in the index (``arrays``, ``header``);
``transform_from`` rebuilds either from what was stored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32, copy=False)


@dataclass(frozen=True)
class PCAWhitening:
    """x ↦ L2( P·(x − μ) ), P = Λ^(−power)·Uᵀ over the top ``dim`` components.

    ``mean``: D, ``projection``: d×D (rows are scaled eigenvectors).
    """

    mean: np.ndarray
    projection: np.ndarray
    power: float = 0.5

    @property
    def in_dim(self) -> int:
        return int(self.projection.shape[1])

    @property
    def out_dim(self) -> int:
        return int(self.projection.shape[0])

    @classmethod
    def fit(cls, x: np.ndarray, dim: int | None = None, power: float = 0.5,
            shrinkage: float = 1e-3) -> "PCAWhitening":
        """Learn from N×D rows. At most N−1 components are meaningful; ``shrinkage``
        (a fraction of the largest eigenvalue) keeps tiny eigenvalues from blowing up."""
        x = np.asarray(x, dtype=np.float64)
        n, d = x.shape
        if n < 2:
            raise ValueError(f"PCA-whitening needs at least 2 descriptors, got {n}")
        mean = x.mean(0)
        xc = x - mean
        # SVD of the centred data: right singular vectors are the eigenvectors.
        _, s, vt = np.linalg.svd(xc, full_matrices=False)
        eig = s**2 / max(n - 1, 1)
        keep = min(d, n - 1) if dim is None else min(dim, d, n - 1)
        eig, vt = eig[:keep], vt[:keep]
        eig = eig + shrinkage * eig[0]
        proj = vt / (eig[:, None] ** power)
        return cls(mean.astype(np.float32), proj.astype(np.float32), float(power))

    def apply(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"whitening expects {self.in_dim}-d descriptors, got {x.shape[-1]}-d")
        return l2_normalize((x - self.mean) @ self.projection.T)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"whitening_mean": self.mean, "whitening_projection": self.projection}

    def header(self) -> dict:
        return {"kind": "pca", "dim": self.out_dim, "power": self.power}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], power: float) -> "PCAWhitening":
        return cls(np.asarray(arrays["whitening_mean"], np.float32),
                   np.asarray(arrays["whitening_projection"], np.float32), power)


@dataclass(frozen=True)
class Centring:
    """x ↦ L2(x − μ), μ the mean of the database descriptors (D).

    The part of PCA-whitening that few images estimate well: a mean from tens of photos
    is stable where their covariance's small eigen-directions are noise. Subtracting it
    removes what every photo of the collection shares (the look of the whole collection),
    which otherwise adds to every similarity, matching or not."""

    mean: np.ndarray

    @property
    def in_dim(self) -> int:
        return int(self.mean.shape[0])

    out_dim = in_dim

    @classmethod
    def fit(cls, x: np.ndarray) -> "Centring":
        x = np.asarray(x, dtype=np.float64)
        if len(x) < 2:
            raise ValueError(f"centring needs at least 2 descriptors, got {len(x)}")
        return cls(x.mean(0).astype(np.float32))

    def apply(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"centring expects {self.in_dim}-d descriptors, got {x.shape[-1]}-d")
        return l2_normalize(x - self.mean)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"whitening_mean": self.mean}

    def header(self) -> dict:
        return {"kind": "center", "dim": self.out_dim}


Transform = PCAWhitening | Centring


def learn(cfg, x: np.ndarray) -> Transform | None:
    """The transform a ``WhiteningConfig`` learns from the N×D rows ``x`` (None: nothing,
    per ``cfg.learned_from``)."""
    fits = {"pca": lambda: PCAWhitening.fit(x, dim=cfg.dim, power=cfg.power), "center": lambda: Centring.fit(x),
            "none": lambda: None}
    return fits[cfg.learned_from(len(x))]()


def kind_of(transform: Transform | None) -> str:
    """'pca', 'center' or 'none': what an index holds."""
    return "none" if transform is None else transform.header()["kind"]


def transform_from(header: dict, arrays: dict) -> Transform:
    """The transform an index stored: ``header`` as its ``header()`` wrote it (files
    written before centring existed hold only ``power``: PCA)."""
    if header.get("kind", "pca") == "center":
        return Centring(np.asarray(arrays["whitening_mean"], np.float32))
    return PCAWhitening.from_arrays(arrays, header["power"])
