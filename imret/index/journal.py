"""The journal of ``imret index``: every extracted raw descriptor, so that an interrupted
run resumes (the record format is ``imret.core.journal``'s)."""
from __future__ import annotations

import numpy as np

from ..core.journal import RecordJournal


class Journal(RecordJournal):
    """Raw global descriptors: one float32 row of ``dim`` values per image."""

    def __init__(self, path: str, header: dict, dim: int, fsync_every_s: float = 2.0):
        super().__init__(path, {**header, "dim": dim}, fsync_every_s)
        self.dim = dim

    def encode(self, raw: np.ndarray) -> bytes:
        return np.asarray(raw, dtype="<f4").reshape(self.dim).tobytes()

    def decode(self, payload: bytes) -> np.ndarray:
        if len(payload) != 4 * self.dim:
            raise ValueError("descriptor of another size")
        return np.frombuffer(payload, dtype="<f4")

    def read(self) -> tuple[list[str], np.ndarray]:
        """(paths, N×dim raw descriptors) recorded so far."""
        paths, rows = self.records()
        desc = np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.dim), np.float32)
        return paths, desc
