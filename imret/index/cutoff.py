"""When a search result counts as a match: the "no good match" cut-off.

A result is a match when spatial verification verified it (enough RANSAC inliers),
or when its cosine reaches ``min_score``. The default comes from
``benchmarks/bench_min_score.py`` (preset ``default``, top-10 results of every query):

- Paris6k subset (114 queries, buildings): at 0.75, 99.7% of the results called
  matches are, 79.9% of the true matches are called so, and for 94% of queries whose
  matches were all removed the best (wrong) result falls below it ("no good match");
- UKBench subset (40 queries, objects): 92.2% precision, 98.3% recall, 85% no-match found.

At 0.70 the Paris recall is 95.5% but UKBench precision falls to 73% and only 69% /
75% of match-less queries say "no good match": a wrong photo called a match misleads
more than a right one left unmarked (it is still listed). The one-scale ``fast``
preset scores lower (matches' median 0.76 / 0.85 against 0.81 / 0.89), yet by the rule
below its cut-off is 0.75 too: at 0.70 its UKBench precision is 0.89. A preset whose backbone
or head was trained for retrieval spreads cosines otherwise and carries its own cut-off
(``Preset.min_score``), which a search takes unless told another: the lowest cut-off (in
steps of 0.05) at which UKBench precision reaches that of 'default' at 0.75 (0.922), so that a
wrong photo is called a match no more often than with 'default'.
"""
from __future__ import annotations

from ..config import DEFAULT_MIN_SCORE as MIN_SCORE  # each preset carries its own: Preset.min_score


def check_min_score(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"min_score is a cosine cut-off between 0 and 1, got {value}")
    return float(value)


def is_match(hit, min_score: float = MIN_SCORE) -> bool:
    """Whether ``hit`` (an ``imret.Hit``) is a match: verified, or its cosine ≥ ``min_score``."""
    return bool(hit.verified) or hit.cosine >= min_score


def hit_fields(hit, min_score: float = MIN_SCORE, matches: bool = True) -> dict:
    """A hit as JSON fields (the CLI's ``--json`` and the service): the ranking ``score``,
    the ``cosine`` and, after spatial verification, ``inliers`` and ``verified`` as separate
    numbers; ``match``: the cut-off's verdict; ``matches`` (the inlier coordinates) only
    when asked."""
    return {"rank": hit.rank, "score": round(hit.score, 6), "cosine": round(hit.cosine, 6),
            "match": is_match(hit, min_score), "id": hit.id, "path": hit.path, **hit.verification(matches)}


def no_match_message(hits, min_score: float = MIN_SCORE) -> str | None:
    """One line when no hit is a match (None when one is)."""
    if any(is_match(h, min_score) for h in hits):
        return None
    if not hits:
        return "no good match: the index is empty"
    best = max(h.cosine for h in hits)
    return f"no good match: the best cosine, {best:.3f}, is below the cut-off {min_score:.2f} and nothing was verified"
