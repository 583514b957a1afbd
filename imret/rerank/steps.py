"""Re-ranking steps: typed, validated, registered by name.

A step is a frozen dataclass holding its parameters. Shortlist steps map a
``Shortlist`` (query descriptors, ranked database row positions, scores, and an
optional mask of verified results) and the database rows to a new ``Shortlist``;
they only reorder the first ``shortlist`` entries and leave the rest as they were.
A spatial-verification step slots in the same way: it sets ``verified`` (and may
change scores), and the expansion steps then expand from verified results only.
Database steps (``dba``) change the rows themselves, once, before any search.

Expansion steps (``aqe``, ``qe``, ``gfr``) search the whole database again with the
expanded query (``scope=database``, the default) through the shortlist's ``Database``:
an index passes its own search (exact or approximate backend: the code path of a first
search), ``Pipeline`` an exact search over the rows otherwise. ``scope=shortlist``
re-scores the first ``shortlist`` entries only (imret's earlier behaviour: a positive
ranked past the shortlist cannot come back).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np

from ..config import ConfigError, _Config
from ..core.registry import STEPS
from ..core.steptext import make_step, parse_steps  # noqa: F401  (re-exported: rerank's public API)
from . import functional as F

SCOPES = ("database", "shortlist")


class Database:
    """What a shortlist step may ask of the whole database: ``search(q, k, rows=None)`` →
    (Q×k positions, Q×k scores) over every row, best first, scored against ``rows``
    (default: the rows searched); ``neighbour_rows(step)``: the rows ``step`` made over
    the whole database at index time (``AugmentedRows``; computed now when not stored).
    This default searches ``rows`` exactly; ``Index`` gives its own."""

    def __init__(self, rows: np.ndarray, search: Callable | None = None, stored: dict | None = None):
        self.rows = rows
        self._search = search
        self._made: dict = dict(stored or {})

    def search(self, q: np.ndarray, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if self._search is not None:
            return self._search(q, k, rows)
        return F.knn(q, self.rows if rows is None else rows, k)

    def neighbour_rows(self, step: "Step") -> np.ndarray:
        key = step.database_key()
        if key not in self._made:  # as AugmentedRows.build makes them (kept there with their lists)
            d = np.asarray(self.rows, np.float32)
            nbr, sims = F.knn(d, d, key.k, exclude=np.arange(len(d)))
            self._made[key] = key.augment_with(d, nbr, sims)
        made = self._made[key]
        return getattr(made, "rows", made)  # a stored AugmentedRows, or rows made here


@dataclass(frozen=True)
class Shortlist:
    """``queries``: Q×D float32 (expansion steps replace them); ``ranks``: Q×K database row
    positions, best first, −1 for none; ``scores``: Q×K float32, higher is better;
    ``verified``: Q×K bool or None (no verification ran); ``database``: the whole
    database for steps that search it again (None: the rows they are given, exactly)."""

    queries: np.ndarray
    ranks: np.ndarray
    scores: np.ndarray
    verified: np.ndarray | None = None
    database: Database | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self):
        q, r, s = self.queries, self.ranks, self.scores
        if q.ndim != 2 or r.ndim != 2 or r.shape != s.shape or len(q) != len(r):
            raise ValueError(f"shortlist shapes disagree: queries {q.shape}, ranks {r.shape}, scores {s.shape}")
        if self.verified is not None and self.verified.shape != r.shape:
            raise ValueError(f"verified mask {self.verified.shape} does not match ranks {r.shape}")

    def replace(self, **changes) -> "Shortlist":
        return dataclasses.replace(self, **changes)

    def reorder_head(self, scores: np.ndarray, queries: np.ndarray | None = None) -> "Shortlist":
        """New scores for the first S entries (S = scores.shape[1]) → those entries sorted
        by them, the rest unchanged."""
        s = scores.shape[1]
        head = [self.ranks[:, :s]] + ([self.verified[:, :s]] if self.verified is not None else [])
        new_scores, *sorted_head = F.resort(scores, *head)
        join = lambda a, b: np.concatenate([a, b[:, s:]], 1)  # noqa: E731
        return self.replace(queries=self.queries if queries is None else queries,
                            ranks=join(sorted_head[0], self.ranks),
                            scores=join(new_scores.astype(np.float32), self.scores),
                            verified=None if self.verified is None else join(sorted_head[1], self.verified))


class Step(_Config):
    """Base of the steps. ``stage``: 'shortlist' (after the search) or 'database'."""

    stage: ClassVar[str] = "shortlist"
    name: ClassVar[str] = "step"

    def __call__(self, sl: Shortlist, rows: np.ndarray) -> Shortlist:
        raise NotImplementedError

    def spec(self) -> str:
        """The text ``parse_steps`` reads back into this step."""
        parts = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            text = "none" if v is None else "/".join(map(_fmt, v)) if isinstance(v, tuple) else _fmt(v)
            parts.append(f"{f.name}={text}")
        return self.name + (":" + ",".join(parts) if parts else "")

    def _check(self, ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(f"{self.name}: {message}")

    def _check_int(self, field: str, low: int, high: int | None = None) -> None:
        v = getattr(self, field)
        ok = isinstance(v, (int, np.integer)) and not isinstance(v, bool)
        ok = ok and low <= v and (high is None or v <= high)
        self._check(ok, f"{field} must be an integer {_range(low, high)}, got {v!r}")

    def _check_float(self, field: str, low: float, high: float | None = None) -> None:
        v = getattr(self, field)
        ok = isinstance(v, (int, float, np.floating)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and low <= v and (high is None or v <= high)
        self._check(ok, f"{field} must be a number {_range(low, high)}, got {v!r}")


def _range(low, high) -> str:
    return f"≥ {low}" + (f" and ≤ {high}" if high is not None else "")


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _head(sl: Shortlist, rows: np.ndarray, shortlist: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``shortlist`` entries' rows (Q×S×D) and validity (Q×S)."""
    return F.gather(rows, sl.ranks[:, :shortlist])


def _expansion_set(sl: Shortlist, rows: np.ndarray, n: int, shortlist: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows to expand a query with: its first n results, or, once a verification
    step has run, its first n verified results within the shortlist → (Q×n×D, Q×n valid)."""
    eligible = sl.ranks[:, :shortlist] >= 0
    if sl.verified is not None:
        eligible = eligible & sl.verified[:, :shortlist]
    pick = np.argsort(~eligible, axis=1, kind="stable")[:, :n]
    pos = np.where(np.take_along_axis(eligible, pick, 1), np.take_along_axis(sl.ranks, pick, 1), -1)
    return F.gather(rows, pos)


def _rescore(sl: Shortlist, rows: np.ndarray, q: np.ndarray, shortlist: int, scope: str,
             scored: np.ndarray | None = None) -> Shortlist:
    """The ranking for new queries ``q``: the first ``shortlist`` entries scored against
    ``scored`` (default ``rows``); with scope 'database', merged with a search of the whole
    database by ``q`` (the ``shortlist`` best)."""
    scored = rows if scored is None else scored
    cand, ok = _head(sl, scored, shortlist)
    scores = np.where(ok, np.einsum("qd,qsd->qs", q, cand), -np.inf).astype(np.float32)
    if scope == "shortlist":
        return sl.reorder_head(scores, queries=q)
    db = sl.database or Database(rows)
    found, found_scores = db.search(q, shortlist, None if scored is rows else scored)
    head = scores.shape[1]
    ranks, new_scores, old = F.merge_requery(sl.ranks, sl.scores, head, scores, found, found_scores)
    verified = None
    if sl.verified is not None:
        verified = np.where(old >= 0, np.take_along_axis(sl.verified, np.maximum(old, 0), 1), False)
    return sl.replace(queries=q, ranks=ranks, scores=new_scores, verified=verified)


class _Expansion(Step):
    """Shared by the query-expansion steps: expand, then search again (see the module docstring)."""

    def _expand(self, q, nbr, valid):
        raise NotImplementedError

    def __call__(self, sl: Shortlist, rows: np.ndarray) -> Shortlist:
        nbr, valid = _expansion_set(sl, rows, self.n, self.shortlist)
        return _rescore(sl, rows, self._expand(sl.queries, nbr, valid), self.shortlist, self.scope)

    def _validate_expansion(self):
        self._check_int("n", 1)
        self._check_int("shortlist", 1)
        self._check(self.scope in SCOPES, f"scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")


@STEPS.register("aqe")
@dataclass(frozen=True)
class AlphaQE(_Expansion):
    """αQE (Radenović et al. 2018): q' = L2(q + Σ_{i≤n} max(0, q·dᵢ)^α dᵢ) over the top n,
    then the whole database is searched with q' (``scope``). α=0 is average query expansion."""

    name: ClassVar[str] = "aqe"
    n: int = 2
    alpha: float = 3.0
    shortlist: int = 100
    scope: str = "database"

    def __post_init__(self):
        self._validate_expansion()
        self._check_float("alpha", 0.0, 100.0)

    def _expand(self, q, nbr, valid):
        return F.alpha_qe(q, nbr, valid, self.alpha)


@STEPS.register("qe")
@dataclass(frozen=True)
class AverageQE(_Expansion):
    """Average query expansion (Chum et al. 2007): q' = mean of q and its top n, then the
    whole database is searched with q' (``scope``)."""

    name: ClassVar[str] = "qe"
    n: int = 2
    shortlist: int = 100
    scope: str = "database"

    def __post_init__(self):
        self._validate_expansion()

    def _expand(self, q, nbr, valid):
        return F.average_qe(q, nbr, valid)


@STEPS.register("gfr")
@dataclass(frozen=True)
class GlobalFeatureRerank(Step):
    """Global-feature re-ranking (Chen & Yao 2025): the query and every database image
    become a weighted linear sum of themselves (``self_weight``) and their own k
    top-ranked neighbours, and the images are ranked again by the updated features.
    Neighbour weights: ``weights`` by neighbour rank (k numbers, e.g. 1/0.5) when given,
    else max(0, s)^α.

    ``scope=database`` (the paper's reading): a database image's neighbours are its k
    nearest other images of the whole database, found at index time and stored
    (``Index.set_gfr``; kept current on add/remove, like αDBA rows); the query's are its
    first k results; the whole database is then searched with the updated query against
    the updated rows. ``scope=shortlist``: neighbours are sought within the query's top
    ``shortlist`` only and only those are re-scored (imret's earlier approximation)."""

    name: ClassVar[str] = "gfr"
    k: int = 2
    alpha: float = 3.0
    weights: tuple[float, ...] | None = None
    self_weight: float = 1.0
    shortlist: int = 100
    scope: str = "database"

    def __post_init__(self):
        self._check_int("k", 1)
        self._check_int("shortlist", 2)
        self._check_float("alpha", 0.0, 100.0)
        self._check_float("self_weight", 0.0)
        self._check(self.scope in SCOPES, f"scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        if self.weights is not None:
            object.__setattr__(self, "weights", tuple(self.weights))
            self._check(len(self.weights) == self.k, f"weights needs k={self.k} numbers, got {len(self.weights)}")
            for w in self.weights:
                self._check(isinstance(w, (int, float)) and math.isfinite(w) and w >= 0,
                            f"weights must be finite numbers ≥ 0, got {self.weights}")
            self._check(self.self_weight > 0 or sum(self.weights) > 0, "all weights are zero")

    @property
    def rank_weights(self) -> np.ndarray | None:
        return None if self.weights is None else np.asarray(self.weights, np.float32)

    def database_key(self) -> "GlobalFeatureRerank":
        """This step with only the parameters of the database side (the stored rows')."""
        return GlobalFeatureRerank(k=self.k, alpha=self.alpha, weights=self.weights, self_weight=self.self_weight)

    def augment_with(self, rows, nbr, sims, which=None) -> np.ndarray:
        return F.augment_rows(rows, nbr, sims, self.alpha, which, self.self_weight, self.rank_weights)

    def __call__(self, sl: Shortlist, rows: np.ndarray) -> Shortlist:
        if self.scope == "shortlist":
            cand, ok = _head(sl, rows, self.shortlist)
            q, scores = F.refine_shortlist(sl.queries, cand, ok, self.k, self.alpha, self.rank_weights,
                                           self.self_weight)
            return sl.reorder_head(scores, queries=q)
        top, valid = F.gather(rows, sl.ranks[:, :self.k])
        q = F.weighted_sum(sl.queries, top, valid, np.einsum("qd,qkd->qk", sl.queries, top), self.alpha,
                           self.self_weight, self.rank_weights)
        refined = (sl.database or Database(rows)).neighbour_rows(self)
        return _rescore(sl, rows, q, self.shortlist, "database", scored=refined)


@STEPS.register("kreciprocal")
@dataclass(frozen=True)
class KReciprocal(Step):
    """k-reciprocal re-ranking (Zhong et al. 2017) of the top ``shortlist``: scores become
    1 − ((1−lam)·Jaccard distance of k-reciprocal neighbourhoods + lam·(1 − cosine)).
    lam=1 keeps the ranking."""

    name: ClassVar[str] = "kreciprocal"
    k1: int = 6
    k2: int = 2
    lam: float = 0.3
    shortlist: int = 100

    def __post_init__(self):
        self._check_int("k1", 1)
        self._check_int("k2", 1)
        self._check_int("shortlist", 2)
        self._check_float("lam", 0.0, 1.0)

    def __call__(self, sl: Shortlist, rows: np.ndarray) -> Shortlist:
        cand, ok = _head(sl, rows, self.shortlist)
        return sl.reorder_head(F.k_reciprocal_scores(sl.queries, cand, ok, self.k1, self.k2, self.lam))


@STEPS.register("dba")
@dataclass(frozen=True)
class DBA(Step):
    """αDBA (Radenović et al. 2018): each database row becomes L2(dᵢ + Σ_{j≤k} max(0, sᵢⱼ)^α dⱼ)
    over its k nearest other rows. Computed once over the database (an ``Index`` stores
    it and updates it on add/remove); searches then compare queries with these rows."""

    stage: ClassVar[str] = "database"
    name: ClassVar[str] = "dba"
    k: int = 2
    alpha: float = 3.0

    def __post_init__(self):
        self._check_int("k", 1, 1000)
        self._check_float("alpha", 0.0, 100.0)

    def augment(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.float32)
        nbr, sims = F.knn(rows, rows, self.k, exclude=np.arange(len(rows)))
        return self.augment_with(rows, nbr, sims)

    def database_key(self) -> "DBA":
        return self

    def augment_with(self, rows, nbr, sims, which=None) -> np.ndarray:
        return F.augment_rows(rows, nbr, sims, self.alpha, which)

    def __call__(self, sl: Shortlist, rows: np.ndarray) -> Shortlist:
        raise ConfigError("dba changes the database rows before the search; it cannot re-rank a shortlist")
