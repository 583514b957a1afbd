"""How a database's local features are stored: ``LocalCodec`` (PCA to ``pca_dim``, L2,
then product-quantisation codes or float16/float32 rows) and the row layout of one
image's ``Stored`` features. Learned on the database by ``LocalStore``; also read and
written by the local-feature journal."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..descriptor.whitening import PCAWhitening, l2_normalize
from .config import LocalConfig

MIN_PQ_TRAINING = 256  # faiss needs at least one point per centroid (8-bit codes: 256)


@dataclass(frozen=True)
class LocalCodec:
    """PCA (``pca``: power 0, a plain rotation and truncation) then storage as ``kind``:
    'pq' with ``centroids`` (m×256×d/m), 'float16' or 'float32'."""

    pca: PCAWhitening
    kind: str
    centroids: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return self.pca.out_dim

    @classmethod
    def fit(cls, descriptors: np.ndarray, cfg: LocalConfig, pca_samples: int = 100_000, pq_samples: int = 10_000,
            seed: int = 0) -> "LocalCodec":
        """Learn from N×C unit rows: the PCA from a random sample of at most ``pca_samples``,
        the PQ codebooks (k-means, 10 iterations) from one of ``pq_samples`` (39 per
        centroid, faiss's advice). PQ needs at least 256 descriptors; with fewer the codec
        stores float16."""
        x = np.asarray(descriptors, np.float32)
        rng = np.random.default_rng(seed)
        if len(x) > pca_samples:
            x = x[rng.choice(len(x), pca_samples, replace=False)]
        if len(x) < 2:
            raise ValueError(f"learning the local-descriptor PCA needs at least 2 descriptors, got {len(x)}")
        pca = PCAWhitening.fit(x, dim=cfg.pca_dim, power=0.0)
        if cfg.storage != "pq" or len(x) < MIN_PQ_TRAINING or pca.out_dim % cfg.pq_m:
            return cls(pca, "float16" if cfg.storage == "pq" else cfg.storage)
        if len(x) > pq_samples:
            x = x[rng.choice(len(x), pq_samples, replace=False)]
        pq = _pq(pca.out_dim, cfg.pq_m)
        pq.cp.niter = 10
        pq.train(np.ascontiguousarray(pca.apply(x)))
        import faiss

        cen = faiss.vector_to_array(pq.centroids).reshape(cfg.pq_m, pq.ksub, pq.dsub)
        return cls(pca, "pq", cen.astype(np.float32))

    def reduce(self, descriptors: np.ndarray) -> np.ndarray:
        """N×C unit rows → N×d unit rows (L2 → PCA → L2)."""
        if len(descriptors) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.pca.apply(l2_normalize(descriptors))

    def encode(self, reduced: np.ndarray) -> np.ndarray:
        if self.kind == "pq":
            return self._pq().compute_codes(np.ascontiguousarray(reduced, np.float32)) if len(reduced) else \
                np.zeros((0, self.code_shape[0]), np.uint8)
        return np.asarray(reduced, self.kind)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        if self.kind == "pq":
            if not len(codes):
                return np.zeros((0, self.dim), np.float32)
            return l2_normalize(self._pq().decode(np.ascontiguousarray(codes, np.uint8)))
        return np.asarray(codes, np.float32)

    @property
    def code_shape(self) -> tuple[int]:
        return (self.centroids.shape[0],) if self.kind == "pq" else (self.dim,)

    @property
    def code_dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.kind == "pq" else self.kind)

    def _pq(self):
        pq = getattr(self, "_pq_cache", None)
        if pq is None:
            import faiss

            m = self.centroids.shape[0]
            pq = _pq(self.dim, m)
            faiss.copy_array_to_vector(np.ascontiguousarray(self.centroids, np.float32).ravel(), pq.centroids)
            object.__setattr__(self, "_pq_cache", pq)
        return pq

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"pca_mean": self.pca.mean, "pca_projection": self.pca.projection}
        if self.centroids is not None:
            out["pq_centroids"] = self.centroids
        return out

    @classmethod
    def from_arrays(cls, kind: str, arrays) -> "LocalCodec":
        pca = PCAWhitening(np.asarray(arrays["pca_mean"], np.float32), np.asarray(arrays["pca_projection"], np.float32), 0.0)
        cen = np.asarray(arrays["pq_centroids"], np.float32) if kind == "pq" else None
        return cls(pca, kind, cen)


def _pq(dim: int, m: int):
    import faiss

    pq = faiss.ProductQuantizer(dim, m, 8)
    pq.cp.min_points_per_centroid = 1  # small databases: no "please provide more points" warnings
    return pq


def row_dtype(codec: LocalCodec) -> np.dtype:
    """The structured layout of one stored feature with ``codec``'s codes."""
    return np.dtype([("x", "<f4"), ("y", "<f4"), ("scale", "u1"), ("score", "<f2"),
                     ("code", codec.code_dtype, codec.code_shape)])


class Stored(NamedTuple):
    """One image's stored rows (a structured array, fields x, y, scale, score, code) and
    its (height, width)."""

    rows: np.ndarray
    size: tuple[int, int]
