"""An ordered list of re-ranking steps, as ``--rerank`` names it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.steptext import check_order
from .steps import Database, Shortlist, Step, parse_steps

DEFAULT_DEPTH = 100
FROM_PRESET = "preset"  # a search's default: the re-ranking its index's preset bundles
NO_RERANK = "none"


@dataclass(frozen=True)
class Pipeline:
    """Database steps (at most one, first) then shortlist steps, applied in order.

    ``depth``: how many results the first search must return for the steps to work
    on: the largest ``shortlist`` of the steps."""

    steps: tuple[Step, ...]

    def __post_init__(self):
        object.__setattr__(self, "steps", tuple(self.steps))
        check_order(self.steps)

    @classmethod
    def parse(cls, spec: "str | Pipeline") -> "Pipeline":
        return spec if isinstance(spec, Pipeline) else cls(parse_steps(spec))

    @property
    def database_step(self) -> Step | None:
        return self.steps[0] if self.steps and self.steps[0].stage == "database" else None

    @property
    def shortlist_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.stage == "shortlist")

    @property
    def depth(self) -> int:
        return max((s.shortlist for s in self.shortlist_steps), default=DEFAULT_DEPTH)

    def __str__(self) -> str:
        return ",".join(s.spec() for s in self.steps)

    def prepare(self, rows: np.ndarray) -> np.ndarray:
        """The database rows the queries are compared with (augmented by dba, if any)."""
        step = self.database_step
        return np.asarray(rows, np.float32) if step is None else step.augment(rows)

    def rerank(self, sl: Shortlist, rows: np.ndarray, database: Database | None = None) -> Shortlist:
        """Apply the shortlist steps in order. ``rows``: the prepared database rows;
        ``database``: how steps search the whole database again (default: exactly, over ``rows``)."""
        if sl.database is None:
            sl = sl.replace(database=database or Database(rows))
        for step in self.shortlist_steps:
            sl = step(sl, rows)
        return sl

    def __call__(self, q: np.ndarray, db: np.ndarray, ranks: np.ndarray | None = None) -> np.ndarray:
        """Whole-database re-ranking, as ``evaluate`` calls it: Q×D queries, N×D rows and the
        first Q×N ranking → the re-ranked Q×N ranking (entries past the shortlist keep
        their order). With dba the first ranking is made again over the augmented rows."""
        q = np.asarray(q, np.float32)
        rows = self.prepare(db)
        sims = q @ rows.T
        if ranks is None or self.database_step is not None:
            ranks = np.argsort(-sims, axis=1, kind="stable")
        scores = np.take_along_axis(sims, ranks, 1)
        return self.rerank(Shortlist(q, ranks, scores), rows).ranks


def resolve(rerank: "str | Pipeline | None", preset_rerank: str) -> Pipeline | None:
    """What a search re-ranks by: ``FROM_PRESET`` ('preset') → the steps of ``preset_rerank``
    (a ``Preset.rerank``; None when it is empty); None or 'none' → None (no re-ranking);
    else the spec or ``Pipeline`` given."""
    if isinstance(rerank, str):
        word = rerank.strip().lower()
        if word == FROM_PRESET:
            rerank = preset_rerank
        if word == NO_RERANK or not rerank.strip():
            return None
    return None if rerank is None else Pipeline.parse(rerank)
