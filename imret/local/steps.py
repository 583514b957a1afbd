"""Spatial verification as a re-ranking step: ``--rerank sv`` (affine) or ``svh`` (homography).

The step re-ranks the first ``shortlist`` results of each query by geometric
verification of local features: a result whose matches RANSAC explains with at least
``min_inliers`` inliers is verified. How pairs are matched, fitted and scored comes
from the features' configuration (``LocalConfig.verify``: 'delf' or 'ratio', see
``imret.local.verify``) unless the step names another (``verify=``) or overrides a
part (``distance``, ``ratio``, ``threshold``, ``trials``, ``score``).

Scores (``score=``): 'inliers' (DELF) ranks the shortlist by inlier count; 'global'
makes a verified result's score ``global + weight · inliers`` and leaves the others'
global score; 'verified' puts the verified results first, by inliers, and keeps the
global order among the others. The default weight (0.002: 500 inliers add 1 to a cosine similarity)
combines both, which did best on the embedded photo set (ranking by inliers alone
lets a photo that fills the background of a query beat the one pasted onto it).
Later expansion steps (``aqe``, ``qe``) expand from verified results only.

``widen=N`` also verifies the N images that the query's local descriptors vote for most
(the DELF paper's retrieval over all database features, ``imret.local.search``) among
those the global shortlist lacks: a positive that global search ranks too low can still
be found by its matches. They enter the verified head with their global scores.

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
from .verify import SCORES, VERIFY_CONFIGS, Verification, VerifyConfig, get_verify_config, verify_many


@STEPS.register("sv")
@dataclass(frozen=True)
class SpatialVerification(Step):
    """Spatial verification of the top ``shortlist`` by an affine model (see the module docstring)."""

    name: ClassVar[str] = "sv"
    model: ClassVar[str] = "affine"
    shortlist: int = 100
    min_inliers: int = 12
    weight: float = 0.002
    verify: str | None = None
    score: str | None = None
    distance: float | None = None
    ratio: float | None = None
    threshold: float | None = None
    trials: int | None = None
    widen: int = 0

    def __post_init__(self):
        self._check_int("shortlist", 1)
        self._check_int("widen", 0)
        self._check_int("min_inliers", 3)
        self._check_float("weight", 0.0)
        if self.verify is not None:
            self._check(self.verify in VERIFY_CONFIGS, f"verify must be one of {', '.join(VERIFY_CONFIGS)}, "
                                                       f"got {self.verify!r}")
        if self.score is not None:
            self._check(self.score in SCORES, f"score must be one of {', '.join(SCORES)}, got {self.score!r}")
        for name, low, high in (("distance", 0.01, 2.0), ("ratio", 0.01, 1.0), ("threshold", 0.1, None)):
            if getattr(self, name) is not None:
                self._check_float(name, low, high)
        if self.trials is not None:
            self._check_int("trials", 1)

    def verify_config(self, features: str = "ratio") -> VerifyConfig:
        """The recipe this step runs: ``verify`` (else ``features``, the name the local
        features were made with) with this step's overrides."""
        base = get_verify_config(self.verify or features)
        over = {k: v for k, v in (("distance", self.distance), ("ratio", self.ratio), ("threshold", self.threshold),
                                  ("max_iters", self.trials), ("score", self.score)) if v is not None}
        return base.replace(model=self.model, min_inliers=self.min_inliers, **over)

    def __call__(self, sl: Shortlist, rows: np.ndarray) -> Shortlist:
        raise ConfigError(f"{self.name} needs local features: search an index built with 'imret index --local' "
                          "with a query image (or evaluate with local features)")

    def bind(self, queries: Sequence[LocalFeatures | None],
             lookup: Callable[[np.ndarray], dict[int, LocalFeatures]], features: str = "ratio",
             voter: Callable[[LocalFeatures, int], np.ndarray] | None = None) -> "BoundVerification":
        """This step with the local features of ``queries`` (one per shortlist row),
        ``lookup``: database row positions → {position: features}, ``features``: the
        verification recipe the features were made for (``LocalConfig.verify``), and
        ``voter``: (query features, n) → the n most-voted database row positions (``widen``)."""
        if self.widen and voter is None:
            raise ConfigError(f"{self.name}: widen needs the database's local descriptors to vote")
        return BoundVerification(self, list(queries), lookup, self.verify_config(features), voter)


@STEPS.register("svh")
@dataclass(frozen=True)
class HomographyVerification(SpatialVerification):
    """Spatial verification of the top ``shortlist`` by a homography."""

    name: ClassVar[str] = "svh"
    model: ClassVar[str] = "homography"


def widen_head(sl: Shortlist, rows: np.ndarray, s: int, extra: Sequence[np.ndarray], n: int) -> Shortlist:
    """``sl`` with up to ``n`` more entries in its head, after its first ``s``: per query,
    the positions of ``extra[q]`` (best first) not among those ``s``, with their global
    scores (row · query); the entries after the head follow, less those moved. Rows grow
    by ``n`` columns (−1, −inf at the end where nothing fills them)."""
    q, k = sl.ranks.shape
    ranks = np.full((q, k + n), -1, np.int64)
    scores = np.full((q, k + n), -np.inf, np.float32)
    verified = None if sl.verified is None else np.zeros((q, k + n), bool)
    for qi in range(q):
        head = sl.ranks[qi, :s]
        in_head = set(head.tolist())
        new = list(dict.fromkeys(int(p) for p in extra[qi] if p >= 0 and p not in in_head))[:n]
        rest = ~np.isin(sl.ranks[qi, s:], new)
        new_scores = rows[new] @ sl.queries[qi] if new else np.zeros(0, np.float32)
        r = np.concatenate([head, np.asarray(new, np.int64), sl.ranks[qi, s:][rest]])
        c = np.concatenate([sl.scores[qi, :s], new_scores.astype(np.float32), sl.scores[qi, s:][rest]])
        ranks[qi, :len(r)], scores[qi, :len(c)] = r, c
        if verified is not None:
            v = np.concatenate([sl.verified[qi, :s], np.zeros(len(new), bool), sl.verified[qi, s:][rest]])
            verified[qi, :len(v)] = v
    return sl.replace(ranks=ranks, scores=scores, verified=verified)


def combine(scores: np.ndarray, inliers: np.ndarray, min_inliers: int, weight: float, score: str = "global"
            ) -> tuple[np.ndarray, np.ndarray]:
    """(new scores, verified mask) from global ``scores`` and ``inliers`` (same shapes):
    'global': global + weight · inliers where verified; 'inliers': the inlier counts;
    'verified': above every global score of the row, by inliers, where verified, and the
    global score elsewhere (an unverified pair's few inliers say nothing: the global
    order among them stays)."""
    verified = inliers >= min_inliers
    if score == "inliers":
        return inliers.astype(np.float32), verified
    if score == "verified":
        above = scores.max(axis=1, keepdims=True) + 1 if scores.size else scores
        return np.where(verified, above + inliers, scores).astype(np.float32), verified
    return np.where(verified, scores + weight * inliers, scores).astype(np.float32), verified


class BoundVerification:
    """A ``SpatialVerification`` with its local features, usable as a pipeline step.
    ``results[(query row, database position)]`` holds each pair's ``Verification``."""

    stage = "shortlist"

    def __init__(self, step: SpatialVerification, queries: list[LocalFeatures | None],
                 lookup: Callable[[np.ndarray], dict[int, LocalFeatures]], config: VerifyConfig | None = None,
                 voter: Callable[[LocalFeatures, int], np.ndarray] | None = None):
        self.step, self.queries, self.lookup, self.voter = step, queries, lookup, voter
        self.config = config or step.verify_config()
        self.results: dict[tuple[int, int], Verification] = {}

    @property
    def shortlist(self) -> int:
        return self.step.shortlist

    def spec(self) -> str:
        return self.step.spec()

    def __call__(self, sl: Shortlist, rows: np.ndarray) -> Shortlist:
        s = min(self.step.shortlist, sl.ranks.shape[1])
        if len(self.queries) != len(sl.ranks):
            raise ValueError(f"{self.step.name}: {len(self.queries)} query feature sets for {len(sl.ranks)} queries")
        if self.step.widen:
            want = s + self.step.widen  # enough votes to leave `widen` outside a shortlist of s
            extra = [np.zeros(0, np.int64) if qf is None else self.voter(qf, want) for qf in self.queries]
            sl = widen_head(sl, rows, s, extra, self.step.widen)
            s += self.step.widen
        cfg = self.config
        inliers = np.zeros((len(sl.ranks), s), np.int64)
        for qi, (qf, ranks) in enumerate(zip(self.queries, sl.ranks[:, :s])):
            if qf is None:
                continue
            feats = self.lookup(ranks[ranks >= 0])
            ks = [k for k, pos in enumerate(ranks) if int(pos) in feats]
            for k, v in zip(ks, verify_many(qf, [feats[int(ranks[k])] for k in ks], cfg)):
                self.results[(qi, int(ranks[k]))] = v
                inliers[qi, k] = v.inliers
        scores, verified = combine(sl.scores[:, :s], inliers, cfg.min_inliers, self.step.weight, cfg.score)
        before = sl.verified if sl.verified is not None else np.zeros(sl.ranks.shape, bool)
        mask = before.copy()
        mask[:, :s] |= verified
        return sl.replace(verified=mask).reorder_head(scores)


def bind_pipeline(pipeline: Pipeline, queries: Sequence[LocalFeatures | None],
                  lookup: Callable[[np.ndarray], dict[int, LocalFeatures]], features: str = "ratio",
                  voter: Callable[[LocalFeatures, int], np.ndarray] | None = None
                  ) -> tuple[Pipeline, list[BoundVerification]]:
    """``pipeline`` with its verification steps bound to these features (made for the
    ``features`` verification recipe), and those bound steps."""
    bound = []
    steps = []
    for s in pipeline.steps:
        if isinstance(s, SpatialVerification):
            s = s.bind(queries, lookup, features, voter)
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

    def voter(query: LocalFeatures, n: int) -> np.ndarray:
        from .search import local_search_of

        ids = local_search_of(index, store).most_voted(query, n)
        return index.positions(np.asarray(ids, np.int64))

    pipeline, bound = bind_pipeline(pipeline, query_local, lookup, store.config.verify, voter)

    def fields(query: int, position: int) -> dict:
        for b in reversed(bound):  # the last verification decides
            v = b.results.get((query, int(position)))
            if v is not None:
                return {"inliers": v.inliers, "matches": v.inlier_points, "verified": v.inliers >= b.step.min_inliers}
        return {}

    return pipeline, fields
