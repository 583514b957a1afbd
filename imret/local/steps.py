"""Spatial verification as a re-ranking step: ``--rerank sv`` (affine) or ``svh`` (homography).

The step re-ranks the first ``shortlist`` results of each query by geometric
verification of local features: a result whose matches RANSAC explains with at least
``min_inliers`` inliers is verified and its score becomes ``global + weight · inliers``;
the others keep their global score. The default weight (0.002: 500 inliers add 1 to a
cosine similarity) combines both, which did best on the embedded photo set (ranking by
inliers alone lets a photo that fills the background of a query beat the one pasted
onto it); ``weight=1`` ranks verified results by inliers alone, as DELF does. Later expansion steps (``aqe``, ``qe``) expand from verified
results only.

The step needs the local features of the queries and of the database rows, which a
``Shortlist`` does not carry: ``bind`` gives it them (``Index.search_image`` and
``evaluate`` do this), and the bound step records each pair's ``Verification``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence

import numpy as np

from ..config import ConfigError
from ..rerank import STEPS, Pipeline, Shortlist, Step
from .features import LocalFeatures
from .verify import Verification, VerifyConfig, verify_many


@STEPS.register("sv")
@dataclass(frozen=True)
class SpatialVerification(Step):
    """Spatial verification of the top ``shortlist`` by an affine model (see the module docstring)."""

    name: ClassVar[str] = "sv"
    model: ClassVar[str] = "affine"
    shortlist: int = 100
    min_inliers: int = 12
    weight: float = 0.002
    ratio: float = 0.9
    threshold: float = 12.0

    def __post_init__(self):
        self._check_int("shortlist", 1)
        self._check_int("min_inliers", 3)
        self._check_float("weight", 0.0)
        self._check_float("ratio", 0.01, 1.0)
        self._check_float("threshold", 0.1)

    @property
    def verify_config(self) -> VerifyConfig:
        return VerifyConfig(ratio=self.ratio, model=self.model, threshold=self.threshold, min_inliers=self.min_inliers)

    def __call__(self, sl: Shortlist, rows: np.ndarray) -> Shortlist:
        raise ConfigError(f"{self.name} needs local features: search an index built with 'imret index --local' "
                          "with a query image (or evaluate with local features)")

    def bind(self, queries: Sequence[LocalFeatures | None],
             lookup: Callable[[np.ndarray], dict[int, LocalFeatures]]) -> "BoundVerification":
        """This step with the local features of ``queries`` (one per shortlist row) and
        ``lookup``: database row positions → {position: features}."""
        return BoundVerification(self, list(queries), lookup)


@STEPS.register("svh")
@dataclass(frozen=True)
class HomographyVerification(SpatialVerification):
    """Spatial verification of the top ``shortlist`` by a homography."""

    name: ClassVar[str] = "svh"
    model: ClassVar[str] = "homography"


def combine(scores: np.ndarray, inliers: np.ndarray, step: SpatialVerification) -> tuple[np.ndarray, np.ndarray]:
    """(new scores, verified mask) from global ``scores`` and ``inliers`` (same shapes)."""
    verified = inliers >= step.min_inliers
    return np.where(verified, scores + step.weight * inliers, scores).astype(np.float32), verified


class BoundVerification:
    """A ``SpatialVerification`` with its local features, usable as a pipeline step.
    ``results[(query row, database position)]`` holds each pair's ``Verification``."""

    stage = "shortlist"

    def __init__(self, step: SpatialVerification, queries: list[LocalFeatures | None],
                 lookup: Callable[[np.ndarray], dict[int, LocalFeatures]]):
        self.step, self.queries, self.lookup = step, queries, lookup
        self.results: dict[tuple[int, int], Verification] = {}
        self.cosines: dict[tuple[int, int], float] = {}  # each pair's score before verification

    @property
    def shortlist(self) -> int:
        return self.step.shortlist

    def spec(self) -> str:
        return self.step.spec()

    def __call__(self, sl: Shortlist, rows: np.ndarray) -> Shortlist:
        s = min(self.step.shortlist, sl.ranks.shape[1])
        if len(self.queries) != len(sl.ranks):
            raise ValueError(f"{self.step.name}: {len(self.queries)} query feature sets for {len(sl.ranks)} queries")
        cfg = self.step.verify_config
        inliers = np.zeros((len(sl.ranks), s), np.int64)
        for qi, (qf, ranks) in enumerate(zip(self.queries, sl.ranks[:, :s])):
            if qf is None:
                continue
            feats = self.lookup(ranks[ranks >= 0])
            ks = [k for k, pos in enumerate(ranks) if int(pos) in feats]
            for k, v in zip(ks, verify_many(qf, [feats[int(ranks[k])] for k in ks], cfg)):
                self.results[(qi, int(ranks[k]))] = v
                self.cosines[(qi, int(ranks[k]))] = float(sl.scores[qi, k])
                inliers[qi, k] = v.inliers
        scores, verified = combine(sl.scores[:, :s], inliers, self.step)
        before = sl.verified if sl.verified is not None else np.zeros(sl.ranks.shape, bool)
        mask = before.copy()
        mask[:, :s] |= verified
        return sl.replace(verified=mask).reorder_head(scores)


def bind_pipeline(pipeline: Pipeline, queries: Sequence[LocalFeatures | None],
                  lookup: Callable[[np.ndarray], dict[int, LocalFeatures]]) -> tuple[Pipeline, list[BoundVerification]]:
    """``pipeline`` with its verification steps bound to these features, and those bound steps."""
    bound = []
    steps = []
    for s in pipeline.steps:
        if isinstance(s, SpatialVerification):
            s = s.bind(queries, lookup)
            bound.append(s)
        steps.append(s)
    return Pipeline(tuple(steps)), bound


def needs_local(pipeline) -> bool:
    """Whether ``pipeline`` (a Pipeline, its text, or None) has a verification step."""
    if pipeline is None:
        return False
    return any(isinstance(s, SpatialVerification) for s in Pipeline.parse(pipeline).steps)


def _no_verification(query: int, position: int) -> dict:
    return {}


def bind_index(pipeline: Pipeline | None, index, query_local: Sequence[LocalFeatures | None] | None,
               n_queries: int) -> tuple[Pipeline | None, Callable[[int, int], dict]]:
    """For ``Index.search_processed``: ``pipeline`` with its verification steps bound to
    ``index``'s local features and ``query_local``, and a function (query row, database
    position) → the ``Hit`` fields verification set (``inliers``, ``matches``)."""
    if pipeline is None or not needs_local(pipeline):
        return pipeline, _no_verification
    store = index.local_store()
    if query_local is None or len(query_local) != n_queries:
        raise ConfigError("spatial verification needs each query's local features: search with an image "
                          "(Index.search_image) or pass query_local")

    def lookup(positions: np.ndarray) -> dict[int, LocalFeatures]:
        ids = index.ids[positions]
        got = store.many([int(i) for i in ids])
        return {int(p): got[int(i)] for p, i in zip(positions, ids) if int(i) in got}

    pipeline, bound = bind_pipeline(pipeline, query_local, lookup)

    def fields(query: int, position: int) -> dict:
        for b in reversed(bound):  # the last verification decides
            v = b.results.get((query, int(position)))
            if v is not None:
                return {"inliers": v.inliers, "matches": v.inlier_points, "verified": v.inliers >= b.step.min_inliers,
                        "cosine": b.cosines[(query, int(position))]}
        return {}

    return pipeline, fields
