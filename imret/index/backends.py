"""Nearest-neighbour search structures, every one addressed by image id.

A backend holds rows under ids, as faiss's ``IndexIDMap`` does: ``add(ids, rows)``,
``remove(ids)``, ``search(q, k) → (scores, ids)`` with −1 padding, ``tune(cfg)``,
``clone()``, ``to_bytes()``. Scores are inner products (cosine, for unit-norm rows):
higher is more similar. An approximate backend only proposes candidates: ``Rescored``
(the one wrapper for all of them) scores its candidates exactly against the rows
being searched. Which backend and which tuning keys exist is read from ``BACKENDS``.

Each backend declares its typed settings as a frozen ``Settings`` dataclass: the fields
of ``IndexConfig`` it reads, their bounds, which of them a built index may change
(``tunable``) and what they do. ``IndexConfig`` validates itself through them, and the
CLI makes its options and messages from them, so a new backend is one class here.

The faiss backends keep the ids of their rows in insertion order beside the faiss
structure (that is the layout of index files; the ids are saved in their own
section). Structures that cannot delete in place rebuild from ``source``: a callable
that gives (ids, rows) of what the owner holds, set by the owner.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields
from typing import Callable, ClassVar

import faiss
import numpy as np

from ..core.errors import ConfigError
from ..core.registry import BACKENDS
from ..rerank.functional import knn

Source = Callable[[], "tuple[np.ndarray, np.ndarray]"]

def setting(default, help: str, tunable: bool = False, minimum: int | None = 1):
    """A field of a backend's ``Settings``: ``tunable`` when a built index may change it
    (``Index.tune``, ``imret search --ef-search``); ``minimum`` bounds a value that is set."""
    return field(default=default, metadata={"help": help, "tunable": tunable, "minimum": minimum})


@dataclass(frozen=True)
class Settings:
    """A backend's typed view of an ``IndexConfig``: only the fields it reads."""

    @classmethod
    def of(cls, cfg) -> "Settings":
        """The fields of ``cfg`` (an ``IndexConfig``) this backend reads, validated."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})

    def __post_init__(self):
        self.check_bounds(self)

    @classmethod
    def check_bounds(cls, cfg) -> None:
        """ConfigError when a field of ``cfg`` this backend reads is out of its bounds."""
        for f in fields(cls):
            value, low = getattr(cfg, f.name), f.metadata.get("minimum")
            if value is not None and low is not None and value < low:
                raise ConfigError(f"index {f.name} must be at least {low}, not {value}")


RESCORE_HELP = "candidates re-scored exactly per search"


@dataclass(frozen=True)
class FlatSettings(Settings):
    pass


@dataclass(frozen=True)
class HNSWSettings(Settings):
    hnsw_m: int = setting(32, "graph neighbours per node (set when the index is built)")
    ef_search: int = setting(128, "beam width of a search", tunable=True)
    rescore: int | None = setting(None, RESCORE_HELP, tunable=True)


@dataclass(frozen=True)
class IVFPQSettings(Settings):
    ivf_lists: int | None = setting(None, "inverted lists (default: 4·√N, set when the index is built)")
    pq_m: int | None = setting(None, "PQ sub-quantisers (default: about 4 dimensions each)")
    nprobe: int = setting(16, "inverted lists visited per search", tunable=True)
    rescore: int | None = setting(None, RESCORE_HELP, tunable=True)


def tuning_keys() -> list[str]:
    """Every setting some registered backend lets a built index change, first seen first."""
    keys: list[str] = []
    for _, cls in BACKENDS.items():
        keys += [k for k in cls.tuning if k not in keys]
    return keys


def tuning_help(key: str) -> str:
    """What tuning ``key`` does and which backends read it (with their defaults), for the CLI."""
    users = [(name, BACKENDS.get(name)) for name in backends_tuning(key)]
    f = next(f for f in fields(users[0][1].Settings) if f.name == key)
    if key == "rescore":
        defaults = ", ".join(f"{cls.rescore} for {name}" for name, cls in users)
        return f"approximate backends: {f.metadata['help']} (default: {defaults})"
    return f"{', '.join(name for name, _ in users)}: {f.metadata['help']}"


def backends_tuning(key: str) -> tuple[str, ...]:
    """The registered backends whose searches read tuning ``key``."""
    return tuple(name for name, cls in BACKENDS.items() if key in cls.tuning)


def _f32(rows) -> np.ndarray:
    return np.ascontiguousarray(rows, dtype=np.float32)


class Backend:
    name: ClassVar[str] = "base"
    words: ClassVar[str] = ""  # what it is, in a few words, for messages
    Settings: ClassVar[type[Settings]] = FlatSettings
    approximate: ClassVar[bool] = False  # True: searched through ``Rescored``
    needs_blob: ClassVar[bool] = False  # True when rebuilding from the rows on load would be slow
    remote: ClassVar[bool] = False  # True when the rows live in another service (not in the index file)
    tuning: ClassVar[tuple[str, ...]] = ()  # its Settings' tunable fields (set per subclass)
    # Candidates an approximate backend proposes for exact re-scoring, unless the config
    # says otherwise: where recall@10 levelled off for its cost in benchmarks/bench_scale.py.
    rescore: ClassVar[int] = 256

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.tuning = tuple(f.name for f in fields(cls.Settings) if f.metadata.get("tunable"))

    def __init__(self, dim: int, cfg, source: Source | None = None):
        self.dim = dim
        self.cfg = self.Settings.of(cfg)
        self.source = source
        self.ids = np.zeros(0, np.int64)
        self.index = self._make(dim, self.cfg)

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
        self.cfg = self.Settings.of(cfg)
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
        obj.dim, obj.cfg, obj.source = dim, cls.Settings.of(cfg), source
        obj.index = faiss.deserialize_index(np.asarray(blob, dtype=np.uint8))
        obj.ids = np.asarray(ids, np.int64).copy()
        obj._configure()
        return obj


@BACKENDS.register("flat")
class FlatBackend(Backend):
    """Exact inner-product search."""

    name = "flat"
    words = "exact search"

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
    words = "approximate: HNSW graph, shortlist re-scored exactly"
    Settings = HNSWSettings
    approximate = True
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

    def _clear(self):
        self.index = self._make(self.dim, self.cfg)


@BACKENDS.register("hnsw-sq8")
class HNSWSQ8Backend(HNSWBackend):
    """HNSW over 8-bit scalar-quantised rows (faiss ``HNSW32,SQ8``): the graph holds one
    byte per dimension instead of four. With ``Index.load(mmap=True)`` the float32 rows,
    read only to re-score the shortlist, stay on disk."""

    name = "hnsw-sq8"
    words = "approximate: HNSW graph over 8-bit codes, shortlist re-scored exactly"

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
    words = "approximate: inverted lists + 4-bit PQ, shortlist re-scored exactly"
    Settings = IVFPQSettings
    approximate = True
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
