"""Nearest-neighbour search over descriptor rows, with faiss hidden behind one small class.

Row position i in a backend is row i of the index's descriptor matrix; the
``Index`` maps positions to image ids. Scores are inner products (cosine, for
unit-norm rows): higher is more similar.
"""
from __future__ import annotations

import math

import faiss
import numpy as np

from ..registry import Registry

BACKENDS: Registry[type["Backend"]] = Registry("index backend")


class Backend:
    name = "base"
    needs_blob = False  # True when rebuilding from the rows on load would be slow
    # Candidates an approximate backend proposes for exact re-scoring, unless the config
    # says otherwise: where recall@10 levelled off for its cost in benchmarks/bench_scale.py.
    rescore = 256

    def __init__(self, dim: int, cfg):
        self.dim = dim
        self.cfg = cfg
        self.index = self._make(dim, cfg)

    def _make(self, dim: int, cfg):
        raise NotImplementedError

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def train(self, rows: np.ndarray) -> None:
        pass

    def add(self, rows: np.ndarray) -> None:
        self.index.add(np.ascontiguousarray(rows, dtype=np.float32))

    def reset(self, rows: np.ndarray) -> None:
        """Replace the content by ``rows`` (after removals), keeping what was trained."""
        self.index.reset()
        if len(rows):
            self.add(rows)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Q×D queries → (Q×k scores, Q×k row positions); position −1 pads missing results."""
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        if self.ntotal == 0:
            q = len(queries)
            return np.full((q, k), -np.inf, np.float32), np.full((q, k), -1, np.int64)
        s, i = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k, **self._search_options(k))
        return s, i

    def _search_options(self, k: int) -> dict:
        """Per-call options of the faiss search for ``k`` results."""
        return {}

    def to_bytes(self) -> np.ndarray:
        return faiss.serialize_index(self.index)

    @classmethod
    def from_bytes(cls, blob: np.ndarray, dim: int, cfg) -> "Backend":
        obj = cls.__new__(cls)
        obj.dim, obj.cfg = dim, cfg
        obj.index = faiss.deserialize_index(np.asarray(blob, dtype=np.uint8))
        obj._configure()
        return obj

    def _configure(self) -> None:
        pass


@BACKENDS.register("flat")
class FlatBackend(Backend):
    """Exact inner-product search."""

    name = "flat"

    def _make(self, dim, cfg):
        return faiss.IndexFlatIP(dim)


@BACKENDS.register("hnsw")
class HNSWBackend(Backend):
    """HNSW graph (approximate); cannot delete, so removals rebuild it."""

    name = "hnsw"
    needs_blob = True

    def _make(self, dim, cfg):
        idx = self._graph(dim, cfg)
        idx.hnsw.efConstruction = 80
        idx.hnsw.efSearch = cfg.ef_search
        return idx

    def _graph(self, dim, cfg):
        return faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)

    def _configure(self):
        self.index.hnsw.efSearch = self.cfg.ef_search

    def _search_options(self, k):
        # faiss does not widen the beam to k by itself: asking for more candidates than
        # efSearch would return a shortlist no better than efSearch's
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.cfg.ef_search, k)
        return {"params": params}

    def reset(self, rows):
        self.index = self._make(self.dim, self.cfg)
        if len(rows):
            self.add(rows)


@BACKENDS.register("hnsw-sq8")
class HNSWSQ8Backend(HNSWBackend):
    """HNSW over 8-bit scalar-quantised rows (faiss ``HNSW32,SQ8``): the graph holds one
    byte per dimension instead of four. With ``Index.load(mmap=True)`` the float32 rows,
    read only to re-score the shortlist, stay on disk."""

    name = "hnsw-sq8"

    def _graph(self, dim, cfg):
        return faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)

    def add(self, rows):
        if not self.index.is_trained:  # per-dimension ranges, from the first rows received
            self.index.train(np.ascontiguousarray(rows, dtype=np.float32))
        super().add(rows)


@BACKENDS.register("ivfpq")
class IVFPQBackend(Backend):
    """Inverted file + 4-bit product quantisation with SIMD fast-scan (faiss ``PQmx4fs``);
    trained on the first rows it receives. The ``Index`` re-scores its shortlist exactly."""

    name = "ivfpq"
    needs_blob = True
    rescore = 1024  # 4-bit codes rank coarsely, and re-scoring is cheap beside the graph walk of hnsw

    def _make(self, dim, cfg):
        return None

    def plan(self, n: int) -> tuple[int, int]:
        nlist = self.cfg.ivf_lists or max(1, min(65536, int(4 * math.sqrt(max(n, 1)))))
        nlist = max(1, min(nlist, n // 39 or 1))  # faiss wants ≥39 training points per list
        if self.cfg.pq_m:
            m = self.cfg.pq_m
        else:  # about 4 dimensions per sub-quantiser, even (fast-scan packs pairs), at most 64
            m = next((m for m in range(min(64, self.dim // 2), 0, -1) if self.dim % m == 0 and m % 2 == 0), 1)
        if self.dim % m:
            raise ValueError(f"pq_m={m} must divide the descriptor dimension {self.dim}")
        return nlist, m

    def train(self, rows):
        nlist, m = self.plan(len(rows))
        self.index = faiss.index_factory(self.dim, f"IVF{nlist},PQ{m}x4fs", faiss.METRIC_INNER_PRODUCT)
        # faiss prints one warning per sub-quantiser when it has fewer than 39 points per
        # centroid (65 lines on a small collection); the count only gates that print, and
        # 'imret index' says it once instead
        self.index.pq.cp.min_points_per_centroid = 1
        faiss.extract_index_ivf(self.index).cp.min_points_per_centroid = 1
        self.index.train(np.ascontiguousarray(rows, dtype=np.float32))
        self._configure()

    def _configure(self):
        faiss.extract_index_ivf(self.index).nprobe = self.cfg.nprobe

    @property
    def ntotal(self):
        return 0 if self.index is None else int(self.index.ntotal)

    def add(self, rows):
        if self.index is None:
            self.train(rows)
        super().add(rows)

    def reset(self, rows):
        if self.index is None:
            if len(rows):
                self.add(rows)
            return
        super().reset(rows)


def choose_kind(n: int) -> str:
    """The backend 'auto' picks for ``n`` descriptors: exact while it is fast enough."""
    if n < 200_000:
        return "flat"
    if n < 1_000_000:
        return "hnsw"
    return "ivfpq"  # at 1M it beat both HNSW variants on recall, speed and memory (README)


def make_backend(dim: int, cfg, n_hint: int = 0) -> Backend:
    kind = choose_kind(n_hint) if cfg.kind == "auto" else cfg.kind
    return BACKENDS.get(kind)(dim, cfg)
