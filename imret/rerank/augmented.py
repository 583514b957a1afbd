"""Database-side rows kept beside an index's descriptors, with the neighbour lists that
made them: αDBA's (``dba``) and global-feature re-ranking's (``gfr``: each image updated
from its own k nearest images of the whole database).

Keeping the lists (N×k positions and similarities) is what makes ``add`` and
``remove`` incremental: only rows whose list changes are augmented again, and the
result equals augmenting the whole new set from scratch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import functional as F
from .steps import DBA, STEPS, Step

PARTS = ("rows", "neighbours", "sims")
SECTIONS = tuple(f"dba/{p}" for p in PARTS)  # αDBA's, as files have always named them


def sections(name: str) -> tuple[str, ...]:
    return tuple(f"{name}/{p}" for p in PARTS)


@dataclass
class AugmentedRows:
    """``step``: a step with ``k`` and ``augment_with`` (``DBA`` or ``GlobalFeatureRerank``'s
    ``database_key()``)."""

    step: Step
    neighbours: np.ndarray  # N×k int64 row positions, best first, −1 pads
    sims: np.ndarray  # N×k float32
    rows: np.ndarray  # N×D float32, unit norm

    @classmethod
    def build(cls, step: Step, descriptors: np.ndarray) -> "AugmentedRows":
        step = step.database_key()
        d = np.asarray(descriptors, np.float32)
        nbr, sims = F.knn(d, d, step.k, exclude=np.arange(len(d)))
        return cls(step, nbr, sims, step.augment_with(d, nbr, sims))

    def _with(self, descriptors: np.ndarray, nbr: np.ndarray, sims: np.ndarray, rows: np.ndarray,
              which: np.ndarray) -> tuple["AugmentedRows", np.ndarray]:
        rows[which] = self.step.augment_with(descriptors, nbr, sims, which)
        return AugmentedRows(self.step, nbr, sims, rows), which

    # Updates return a new object and never write into this one's arrays, so an index
    # copied for a writer (Index.clone) can change while readers search the original.
    def with_added(self, descriptors: np.ndarray) -> tuple["AugmentedRows", np.ndarray]:
        """``descriptors``: all rows, those added since this was made appended at the end
        → (updated rows, the positions augmented again)."""
        d = np.asarray(descriptors, np.float32)
        nbr, sims, changed = F.knn_after_add(d, len(self.rows), self.neighbours, self.sims)
        rows = np.concatenate([self.rows, np.zeros((len(d) - len(self.rows), d.shape[1]), np.float32)])
        return self._with(d, nbr, sims, rows, changed)

    def with_removed(self, keep: np.ndarray, descriptors: np.ndarray) -> tuple["AugmentedRows", np.ndarray]:
        """``keep``: mask over the current rows; ``descriptors``: the rows kept
        → (updated rows, the positions, after removal, augmented again)."""
        d = np.asarray(descriptors, np.float32)
        nbr, sims, changed = F.knn_after_remove(d, keep, self.neighbours, self.sims)
        return self._with(d, nbr, sims, np.array(self.rows[keep], np.float32), changed)

    def arrays(self) -> dict[str, np.ndarray]:
        return dict(zip(sections(self.step.name), (self.rows, self.neighbours, self.sims)))

    @classmethod
    def from_arrays(cls, params: dict, arrays: dict, n: int, dim: int, name: str = DBA.name) -> "AugmentedRows":
        step = STEPS.get(name).from_dict(params)
        rows, nbr, sims = (arrays[s] for s in sections(name))
        if rows.shape != (n, dim) or nbr.shape != (n, step.k) or sims.shape != (n, step.k):
            raise ValueError(f"{name} sections {rows.shape}, {nbr.shape}, {sims.shape} disagree with {n} rows "
                             f"of {dim}-d and k={step.k}")
        if n and (nbr.min() < -1 or nbr.max() >= n):
            raise ValueError(f"{name} neighbour positions out of range")
        return cls(step, np.array(nbr, np.int64), np.array(sims, np.float32), np.array(rows, np.float32))
