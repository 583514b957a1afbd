"""Sidecars: per-image data an index keeps beside its rows, behind one small protocol.

A sidecar follows the catalog: row k of every sidecar is image k. The index calls

- ``added(ids, rows)`` after rows were appended (``rows``: all N×dim rows, the new ones last),
- ``removed(keep, removed_ids, rows)`` after the images outside mask ``keep`` were dropped,
- ``header()`` / ``arrays()`` when it writes its file, and the reader registered under
  the sidecar's name when it reads one (``SIDECARS``),

and each returns the updated sidecar. The rows sidecars never write into the arrays of
the one they were called on and the local store is copied by ``copy()``, so a copy made
for a writer (``Index.clone``) can change while readers search the original. The built-in sidecars are the stored αDBA rows (``dba``) and
global-feature re-ranking's database side (``gfr``). The local features are a sidecar
with a file of their own (``PATH.local.h5``, committed by the index file: safety.py);
their rows come from their own extraction, so ``added`` leaves them to the indexer.
"""
from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from ..rerank import AugmentedRows


class Sidecar(Protocol):
    name: str

    def added(self, ids: np.ndarray, rows: np.ndarray) -> "Sidecar": ...

    def removed(self, keep: np.ndarray, removed_ids: np.ndarray, rows: np.ndarray) -> "Sidecar": ...

    def header(self) -> dict | None: ...

    def arrays(self) -> dict[str, np.ndarray]: ...


class RowsSidecar:
    """Re-ranking rows stored per image (``AugmentedRows``: αDBA's or gfr's), updated
    incrementally: only the rows whose neighbour list changes are made again."""

    def __init__(self, name: str, rows: AugmentedRows):
        self.name, self.value = name, rows

    def added(self, ids, rows) -> "RowsSidecar":
        return RowsSidecar(self.name, self.value.with_added(rows)[0])

    def removed(self, keep, removed_ids, rows) -> "RowsSidecar":
        return RowsSidecar(self.name, self.value.with_removed(keep, rows)[0])

    def header(self) -> dict:
        return self.value.step.to_dict()

    def arrays(self) -> dict[str, np.ndarray]:
        return self.value.arrays()

    def copy(self) -> "RowsSidecar":
        return self  # never changed in place


class LocalSidecar:
    """The local features (``imret.local.LocalStore``), saved in their own file."""

    name = "local"

    def __init__(self, store):
        self.value = store

    def added(self, ids, rows) -> "LocalSidecar":
        return self  # their features come from their own extraction (the indexer puts them)

    def removed(self, keep, removed_ids, rows) -> "LocalSidecar":
        self.value.remove(removed_ids)
        return self

    def header(self) -> None:
        return None  # the index file names the local file's generation instead (Index.save)

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    def copy(self) -> "LocalSidecar":
        return LocalSidecar(self.value.copy())


def _read_rows(name: str) -> Callable:
    def read(params: dict, arrays: dict, n: int, dim: int) -> RowsSidecar:
        return RowsSidecar(name, AugmentedRows.from_arrays(params, arrays, n, dim, name))
    return read


# Sidecars kept in the index file: header key → reader(header value, arrays, N, dim).
SIDECARS: dict[str, Callable] = {"dba": _read_rows("dba"), "gfr": _read_rows("gfr")}
