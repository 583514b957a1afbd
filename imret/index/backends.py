"""Nearest-neighbour search structures, every one addressed by image id.

A backend holds rows under ids, as faiss's ``IndexIDMap`` does: ``add(ids, rows)``,
``remove(ids)``, ``search(q, k) → (scores, ids)`` with −1 padding, ``tune(cfg)``,
``clone()``, ``to_bytes()``. Scores are inner products (cosine, for unit-norm rows):
higher is more similar. An approximate backend only proposes candidates: ``Rescored``
(the one wrapper for all of them) scores its candidates exactly against the rows
being searched. Which backend and which tuning keys exist is read from ``BACKENDS``.

The faiss backends keep the ids of their rows in insertion order beside the faiss
structure (that is the layout of index files; the ids are saved in their own
section). Structures that cannot delete in place rebuild from ``source``: a callable
that gives (ids, rows) of what the owner holds, set by the owner.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, ClassVar

import faiss
import numpy as np

from ..core.errors import ConfigError
from ..core.registry import BACKENDS
from ..rerank.functional import knn

Source = Callable[[], "tuple[np.ndarray, np.ndarray]"]

# Tuning keys (IndexConfig fields a built index may change) → what they do, for the CLI.
TUNING_HELP = {
    "ef_search": "hnsw: beam width of a search",
    "nprobe": "ivfpq: inverted lists visited per search",
    "rescore": "approximate backends: candidates re-scored exactly per search (256 for hnsw, 1024 for ivfpq "
               "unless set)",
}


def tuning_keys() -> list[str]:
    """Every key some registered backend can tune, in the order of ``TUNING_HELP``."""
    keys = {k for _, cls in BACKENDS.items() for k in cls.tuning}
    return [k for k in TUNING_HELP if k in keys]


def _f32(rows) -> np.ndarray:
    return np.ascontiguousarray(rows, dtype=np.float32)


class Backend:
    name: ClassVar[str] = "base"
    approximate: ClassVar[bool] = False  # True: searched through ``Rescored``
    needs_blob: ClassVar[bool] = False  # True when rebuilding from the rows on load would be slow
    remote: ClassVar[bool] = False  # True when the rows live in another service (not in the index file)
    tuning: ClassVar[tuple[str, ...]] = ()  # IndexConfig fields its searches read
    # Candidates an approximate backend proposes for exact re-scoring, unless the config
    # says otherwise: where recall@10 levelled off for its cost in benchmarks/bench_scale.py.
    rescore: ClassVar[int] = 256

    def __init__(self, dim: int, cfg, source: Source | None = None):
        self.dim = dim
        self.cfg = cfg
        self.source = source
        self.ids = np.zeros(0, np.int64)
        self.index = self._make(dim, cfg)

    def _make(self, dim: int, cfg):
        raise NotImplementedError

    @property
    def ntotal(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    def _add_rows(self, rows: np.ndarray) -> None:
        self.index.add(_f32(rows))

    def add(self, ids: np.ndarray, rows: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64)
        if len(ids) != len(rows):
            raise ValueError(f"{len(ids)} ids for {len(rows)} rows")
        if not len(ids):
            return
        self._add_rows(rows)
        self.ids = np.concatenate([self.ids, ids])

    def remove(self, ids) -> None:
        """Drop the rows of ``ids``; a structure that cannot delete is rebuilt from ``source``
        (which already lacks them), keeping what was trained."""
        ids, rows = self.source()
        self._clear()
        self.ids = np.zeros(0, np.int64)
        self.add(ids, rows)

    def _clear(self) -> None:
        self.index.reset()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Q×D queries → (Q×k scores, Q×k ids); id −1 pads missing results."""
        q = len(queries)
        if self.ntotal == 0:
            return np.full((q, 1), -np.inf, np.float32), np.full((q, 1), -1, np.int64)
        k = max(1, min(k, self.ntotal))
        s, pos = self.index.search(_f32(queries), k, **self._search_options(k))
        return s, np.where(pos >= 0, self.ids[np.maximum(pos, 0)], -1)

    def _search_options(self, k: int) -> dict:
        """Per-call options of the faiss search for ``k`` results."""
        return {}

    def tune(self, cfg) -> None:
        """Take the search settings of ``cfg`` (an ``IndexConfig``) for later searches."""
        self.cfg = cfg
        if self.index is not None:
            self._configure()

    def _configure(self) -> None:
        pass

    def clone(self, source: Source | None = None) -> "Backend":
        """An independent copy whose rebuilds read ``source``."""
        other = copy.copy(self)
        other.source = source
        other.ids = self.ids.copy()
        if self.index is not None:
            other.index = faiss.clone_index(self.index)
        return other

    def to_bytes(self) -> np.ndarray:
        return faiss.serialize_index(self.index)

    @classmethod
    def restore(cls, dim: int, cfg, ids: np.ndarray, rows: np.ndarray, blob: np.ndarray | None = None,
                source: Source | None = None) -> "Backend":
        """The backend of an index file: from its saved structure ``blob``, else rebuilt from ``rows``."""
        if blob is None:
            obj = cls(dim, cfg, source)
            obj.add(ids, rows)
            return obj
        obj = cls.__new__(cls)
        obj.dim, obj.cfg, obj.source = dim, cfg, source
        obj.index = faiss.deserialize_index(np.asarray(blob, dtype=np.uint8))
        obj.ids = np.asarray(ids, np.int64).copy()
        obj._configure()
        return obj


@BACKENDS.register("flat")
class FlatBackend(Backend):
    """Exact inner-product search."""

    name = "flat"

    def _make(self, dim, cfg):
        return faiss.IndexFlatIP(dim)

    def remove(self, ids) -> None:
        # in place: the rows left keep their order, as a rebuild from them would
        keep = ~np.isin(self.ids, np.asarray(list(ids), np.int64))
        self.index.remove_ids(faiss.IDSelectorBatch(np.flatnonzero(~keep).astype(np.int64)))
        self.ids = self.ids[keep]


@BACKENDS.register("hnsw")
class HNSWBackend(Backend):
    """HNSW graph (approximate); cannot delete, so removals rebuild it."""

    name = "hnsw"
    approximate = True
    needs_blob = True
    tuning = ("ef_search", "rescore")

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

    def _clear(self):
        self.index = self._make(self.dim, self.cfg)


@BACKENDS.register("hnsw-sq8")
class HNSWSQ8Backend(HNSWBackend):
    """HNSW over 8-bit scalar-quantised rows (faiss ``HNSW32,SQ8``): the graph holds one
    byte per dimension instead of four. With ``Index.load(mmap=True)`` the float32 rows,
    read only to re-score the shortlist, stay on disk."""

    name = "hnsw-sq8"

    def _graph(self, dim, cfg):
        return faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)

    def _add_rows(self, rows):
        if not self.index.is_trained:  # per-dimension ranges, from the first rows received
            self.index.train(_f32(rows))
        super()._add_rows(rows)


MIN_IVFPQ_ROWS = 16  # one training point per centroid of a 4-bit sub-quantiser


@BACKENDS.register("ivfpq")
class IVFPQBackend(Backend):
    """Inverted file + 4-bit product quantisation with SIMD fast-scan (faiss ``PQmx4fs``);
    trained on the first rows it receives."""

    name = "ivfpq"
    approximate = True
    needs_blob = True
    tuning = ("nprobe", "rescore")
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
        if len(rows) < MIN_IVFPQ_ROWS:  # faiss would abort inside its k-means
            raise ConfigError(f"ivfpq needs at least {MIN_IVFPQ_ROWS} images to learn its 4-bit codebooks, got "
                              f"{len(rows)}: use --index-kind flat (exact, and fast up to ~200k images)")
        nlist, m = self.plan(len(rows))
        self.index = faiss.index_factory(self.dim, f"IVF{nlist},PQ{m}x4fs", faiss.METRIC_INNER_PRODUCT)
        # faiss prints one warning per sub-quantiser when it has fewer than 39 points per
        # centroid (65 lines on a small collection); the count only gates that print, and
        # 'imret index' says it once instead
        self.index.pq.cp.min_points_per_centroid = 1
        faiss.extract_index_ivf(self.index).cp.min_points_per_centroid = 1
        self.index.train(_f32(rows))
        self._configure()

    def _configure(self):
        faiss.extract_index_ivf(self.index).nprobe = self.cfg.nprobe

    def _add_rows(self, rows):
        if self.index is None:
            self.train(rows)
        super()._add_rows(rows)

    def _clear(self):
        if self.index is not None:
            self.index.reset()


class Rescored:
    """Any approximate backend, its candidates re-scored exactly: the backend proposes
    ``max(4·k, rescore)`` ids, they are scored against ``rows`` (the rows searched: the
    plain ones, or αDBA's), and the best k are kept."""

    def __init__(self, backend: Backend):
        self.backend = backend

    def search(self, q: np.ndarray, k: int, rows: np.ndarray, positions, held: bool = True
               ) -> tuple[np.ndarray, np.ndarray]:
        """(Q×k scores, Q×k row positions of ``rows``); ``positions`` maps ids to row positions;
        ``held``: whether ``rows`` are the rows the backend holds (αDBA's are not)."""
        n = self.backend.cfg.rescore or self.backend.rescore
        _, found = self.backend.search(q, max(4 * k, n))
        cand = positions(found)
        safe = np.where(cand >= 0, cand, 0)
        exact = np.einsum("qd,qkd->qk", q, np.asarray(rows)[safe])
        exact = np.where(cand >= 0, exact, -np.inf)
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(exact, order, 1)
        return scores, np.where(np.isfinite(scores), np.take_along_axis(cand, order, 1), -1)


class Exact:
    """An exact backend: every row scored. Rows other than those it holds (αDBA's) are
    compared by brute force."""

    def __init__(self, backend: Backend):
        self.backend = backend

    def search(self, q: np.ndarray, k: int, rows: np.ndarray, positions, held: bool = True
               ) -> tuple[np.ndarray, np.ndarray]:
        if held:
            scores, ids = self.backend.search(q, k)
            return scores, positions(ids)
        pos, scores = knn(q, rows, k)
        return scores, pos


def searcher(backend: Backend):
    """How an index searches ``backend``: exactly, or through exact re-scoring."""
    return Rescored(backend) if backend.approximate else Exact(backend)


def choose_kind(n: int) -> str:
    """The backend 'auto' picks for ``n`` descriptors: exact while it is fast enough."""
    if n < 200_000:
        return "flat"
    if n < 1_000_000:
        return "hnsw"
    return "ivfpq"  # at 1M it beat both HNSW variants on recall, speed and memory (README)


def make_backend(dim: int, cfg, n_hint: int = 0, source: Source | None = None) -> Backend:
    kind = choose_kind(n_hint) if cfg.kind == "auto" else cfg.kind
    return BACKENDS.get(kind)(dim, cfg, source)
