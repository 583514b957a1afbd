"""``VectorStore``: an index's descriptor rows and how they are searched.

It holds the whitening learned at build time (raw descriptors → the index's space), the
N×dim float32 rows (unit norm; row k is the catalog's image k) and the backend that
searches them under image ids. Searches return row positions: an exact backend's
answers, or an approximate backend's candidates re-scored exactly (``searcher``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..core.registry import BACKENDS
from ..descriptor.whitening import Transform, l2_normalize, transform_from
from .backends import Backend, make_backend, searcher

Positions = Callable[[np.ndarray], np.ndarray]  # image ids → row positions (−1: not held)
Ids = Callable[[], np.ndarray]  # the ids of the rows held, in row order (the catalog's)


class VectorStore:
    """``ids_of``: the ids of the rows, asked of their owner (the catalog) when the backend
    rebuilds, so the ids are held in one place."""

    def __init__(self, cfg, raw_dim: int, whitening: Transform | None = None, ids_of: Ids | None = None):
        self.cfg = cfg  # the preset's IndexConfig
        self.ids_of = ids_of
        self.raw_dim = raw_dim  # descriptor size before whitening
        self.whitening = whitening
        self.dim = whitening.out_dim if whitening is not None else raw_dim
        self.rows = np.zeros((0, self.dim), np.float32)
        self.backend: Backend = make_backend(self.dim, cfg, source=self._content)

    def __len__(self) -> int:
        return len(self.rows)

    def _content(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, rows) held: what the search structure is rebuilt from."""
        return self.ids_of(), np.asarray(self.rows)

    def clone(self, ids_of: Ids) -> "VectorStore":
        """An independent copy whose rows belong to ``ids_of`` (the copy's catalog)."""
        other = VectorStore.__new__(VectorStore)
        other.__dict__.update(self.__dict__)
        other.ids_of = ids_of
        other.rows = np.array(self.rows, np.float32)
        other.backend = self.backend.clone(source=other._content)
        return other

    def process(self, raw: np.ndarray) -> np.ndarray:
        """N×raw_dim raw descriptors → N×dim rows of the index's space (whitened, L2)."""
        raw = np.atleast_2d(np.asarray(raw, np.float32))
        return self.whitening.apply(raw) if self.whitening is not None else l2_normalize(raw)

    def append(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Add N×dim processed ``rows`` under ``ids``; 'auto' picks its backend on the first rows."""
        rows = np.asarray(rows, np.float32)
        if rows.shape != (len(ids), self.dim):
            raise ValueError(f"{len(ids)} ids and {rows.shape} rows (dim {self.dim}) disagree")
        if self.cfg.kind == "auto" and not len(self):
            self.backend = make_backend(self.dim, self.cfg, n_hint=len(ids), source=self._content)
        self.rows = np.concatenate([np.asarray(self.rows), rows]).astype(np.float32)
        self.backend.add(ids, rows)

    def keep(self, keep: np.ndarray, removed_ids: np.ndarray) -> None:
        """Keep the rows of mask ``keep``; the backend drops ``removed_ids`` (the others'),
        rebuilding, where it must, from the rows kept and ``ids_of`` (already without them)."""
        self.rows = np.ascontiguousarray(np.asarray(self.rows)[keep])
        self.backend.remove(removed_ids)

    def tune(self, cfg) -> None:
        self.cfg = cfg
        self.backend.tune(cfg)

    def search(self, q: np.ndarray, depth: int, positions: Positions, target: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(Q×depth scores, row positions) of the best rows for Q×dim ``q`` through the
        backend. ``target``: rows to score instead of the held ones (αDBA's, re-ranking's)."""
        target = self.rows if target is None else target
        held = target is self.rows or not len(self)
        return searcher(self.backend).search(q, depth, target, positions, held=held)

    # -- index file ---------------------------------------------------------
    def header(self) -> dict:
        return {"raw_dim": self.raw_dim, "dim": self.dim, "backend": self.backend.name,
                "whitening": None if self.whitening is None else self.whitening.header()}

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"descriptors": np.asarray(self.rows, np.float32)}
        if self.whitening is not None:
            out.update(self.whitening.arrays())
        if self.backend.needs_blob and len(self):
            out["backend"] = self.backend.to_bytes()
        return out

    @classmethod
    def read(cls, cfg, meta: dict, arrays: dict, ids_of: Ids, mmap: bool = False) -> "VectorStore":
        whitening = None
        if meta.get("whitening"):
            whitening = transform_from(meta["whitening"], arrays)
        store = cls.__new__(cls)
        store.cfg, store.raw_dim, store.whitening, store.ids_of = cfg, int(meta["raw_dim"]), whitening, ids_of
        store.dim = whitening.out_dim if whitening is not None else store.raw_dim
        store.rows = arrays["descriptors"] if mmap else np.array(arrays["descriptors"], np.float32)
        ids = np.asarray(ids_of(), np.int64)
        if store.rows.shape != (len(ids), store.dim):
            raise ValueError("section sizes disagree with the header")
        blob = arrays["backend"] if "backend" in arrays else None
        store.backend = BACKENDS.get(meta.get("backend", "flat")).restore(
            store.dim, cfg, ids, np.asarray(store.rows), blob, source=store._content)
        if store.backend.ntotal != len(ids):
            raise ValueError(f"search structure holds {store.backend.ntotal} rows, expected {len(ids)}")
        return store
