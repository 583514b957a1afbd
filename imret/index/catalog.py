"""``Catalog``: which images an index holds: their stable ids, their paths, the folders
indexed (nothing outside them is ever served) and the next id to hand out.

Ids grow with every add and are never reused; the catalog's order is the row order of
the vector store and of every sidecar (position k of each is the same image).
"""
from __future__ import annotations

import os
from typing import Iterable

import numpy as np

from .fileformat import decode_paths, encode_paths


class Catalog:
    def __init__(self):
        self.ids = np.zeros(0, np.int64)  # N, increasing
        self.paths: list[str] = []  # N absolute paths
        self.roots: list[str] = []
        self.next_id = 0
        self._pos_of: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __contains__(self, path: str) -> bool:
        return path in self._pos_of

    def copy(self) -> "Catalog":
        other = Catalog()
        other.ids, other.paths, other.roots = self.ids.copy(), list(self.paths), list(self.roots)
        other.next_id, other._pos_of = self.next_id, dict(self._pos_of)
        return other

    def add_roots(self, sources) -> None:
        for s in sources:
            a = os.path.abspath(os.fspath(s))
            if a not in self.roots:
                self.roots.append(a)

    def new_ids(self, n: int) -> np.ndarray:
        return np.arange(self.next_id, self.next_id + n, dtype=np.int64)

    def append(self, ids: np.ndarray, paths: list[str]) -> None:
        """Hold ``paths`` under ``ids`` (new, larger than every id held)."""
        ids = np.asarray(ids, np.int64)
        if ids.shape != (len(paths),):
            raise ValueError(f"{len(paths)} paths and {ids.shape} ids disagree")
        if len(self.ids) and len(ids) and int(ids.min()) <= int(self.ids.max()):
            raise ValueError(f"ids must grow: {int(ids.min())} after {int(self.ids.max())}")
        if len(ids):
            self.next_id = max(self.next_id, int(ids.max()) + 1)
        start = len(self.paths)
        self.ids = np.concatenate([self.ids, ids])
        self.paths.extend(paths)
        for i, p in enumerate(paths):
            self._pos_of[p] = start + i

    def select(self, paths_or_ids: Iterable) -> np.ndarray:
        """Mask over the held images: those named by id, by path, or under a named folder."""
        drop = np.zeros(len(self), bool)
        id_pos = {int(i): k for k, i in enumerate(self.ids)}
        for item in paths_or_ids:
            if isinstance(item, (int, np.integer)):
                if int(item) in id_pos:
                    drop[id_pos[int(item)]] = True
                continue
            ap = os.path.abspath(os.fspath(item))
            if ap in self._pos_of:
                drop[self._pos_of[ap]] = True
            else:
                prefix = ap.rstrip(os.sep) + os.sep
                drop[[k for k, p in enumerate(self.paths) if p.startswith(prefix)]] = True
        return drop

    def keep(self, keep: np.ndarray) -> None:
        """Keep the images of mask ``keep``, in their order."""
        self.ids = self.ids[keep]
        self.paths = [p for p, k in zip(self.paths, keep) if k]
        self._pos_of = {p: i for i, p in enumerate(self.paths)}

    def position(self, path: str) -> int | None:
        return self._pos_of.get(path)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Row positions of image ``ids`` (any shape); −1 for −1 and for ids not held."""
        ids = np.asarray(ids, np.int64)
        if not len(self.ids):
            return np.full(ids.shape, -1, np.int64)
        # ids are held in increasing order and removals keep the order: a binary search
        at = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return np.where((ids >= 0) & (self.ids[at] == ids), at, -1)

    def path_of(self, image_id: int) -> str:
        k = np.flatnonzero(self.ids == image_id)
        if not len(k):
            raise KeyError(f"no image with id {image_id}")
        return self.paths[int(k[0])]

    # -- index file ---------------------------------------------------------
    def header(self) -> dict:
        return {"next_id": int(self.next_id), "count": len(self.paths), "roots": self.roots}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"ids": self.ids, "paths": encode_paths(self.paths)}

    @classmethod
    def read(cls, meta: dict, arrays: dict) -> "Catalog":
        cat = cls()
        n = int(meta["count"])
        cat.ids = np.asarray(arrays["ids"], np.int64)
        cat.paths = decode_paths(arrays["paths"], n)
        if cat.ids.shape != (n,):
            raise ValueError("section sizes disagree with the header")
        cat.next_id = int(meta["next_id"])
        cat.roots = [str(r) for r in meta.get("roots", [])]
        cat._pos_of = {p: i for i, p in enumerate(cat.paths)}
        return cat
