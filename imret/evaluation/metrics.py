"""Retrieval metrics, following the published protocols exactly.

Rankings are rows: ``ranks[q]`` lists database indices for query q, best first
(Q×N, or Q×K for a truncated ranking). Positives missing from a truncated
ranking count as never retrieved.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def average_precision(pos: np.ndarray, n_positives: int) -> float:
    """AP from the sorted 0-based ranks of the retrieved positives (junk already removed),
    by the trapezoidal rule of the Oxford/revisitop ``compute_ap``."""
    pos = np.asarray(pos, dtype=np.float64)
    if n_positives <= 0:
        return float("nan")
    if len(pos) == 0:
        return 0.0
    j = np.arange(len(pos), dtype=np.float64)
    prec0 = np.where(pos == 0, 1.0, j / np.maximum(pos, 1))
    prec1 = (j + 1) / (pos + 1)
    return float(((prec0 + prec1) / 2).sum() / n_positives)


def _positions(ranking: np.ndarray, ids) -> np.ndarray:
    return np.flatnonzero(np.isin(ranking, np.asarray(list(ids), dtype=np.int64)))


def compute_map(ranks: np.ndarray, gnd: Sequence[dict], kappas: Sequence[int] = ()):
    """revisitop's ``compute_map``: (mAP, per-query AP, mean precision@k, per-query precision@k).

    ``gnd[q]`` holds 'ok' (positive ids) and optionally 'junk' (ids ignored: removed
    from the ranking before scoring). Queries without positives are NaN and left
    out of the means.
    """
    ranks = np.asarray(ranks)
    nq = len(gnd)
    aps = np.full(nq, np.nan)
    prs = np.full((nq, len(kappas)), np.nan)
    for i in range(nq):
        ok = np.asarray(gnd[i]["ok"], dtype=np.int64).ravel()
        if ok.size == 0:
            continue
        junk = np.asarray(gnd[i].get("junk", []), dtype=np.int64).ravel()
        pos = _positions(ranks[i], ok)
        if junk.size:
            jpos = _positions(ranks[i], junk)
            pos = pos - np.searchsorted(jpos, pos)  # junk ranked before a positive does not count
        aps[i] = average_precision(pos, ok.size)
        pos1 = pos + 1
        for j, k in enumerate(kappas):
            if pos1.size == 0:
                prs[i, j] = 0.0
                continue
            kq = min(int(pos1.max()), int(k))
            prs[i, j] = (pos1 <= kq).sum() / kq
    valid = ~np.isnan(aps)
    if not valid.any():
        return float("nan"), aps, np.full(len(kappas), np.nan), prs
    return float(aps[valid].mean()), aps, prs[valid].mean(0), prs


def revisited_protocol(ranks: np.ndarray, gnd: Sequence[dict], kappas: Sequence[int] = (1, 5, 10)) -> dict:
    """Revisited Oxford/Paris (Radenović et al. 2018): Easy, Medium, Hard mAP and mP@k, in %.

    ``gnd[q]`` holds 'easy', 'hard' and 'junk' id lists. Easy: positives = easy,
    ignored = junk+hard. Medium: positives = easy+hard, ignored = junk. Hard:
    positives = hard, ignored = junk+easy.
    """
    cat = lambda *ls: np.concatenate([np.asarray(x, dtype=np.int64).ravel() for x in ls])  # noqa: E731
    setups = {
        "easy": [{"ok": cat(g["easy"]), "junk": cat(g["junk"], g["hard"])} for g in gnd],
        "medium": [{"ok": cat(g["easy"], g["hard"]), "junk": cat(g["junk"])} for g in gnd],
        "hard": [{"ok": cat(g["hard"]), "junk": cat(g["junk"], g["easy"])} for g in gnd],
    }
    out = {}
    for name, g in setups.items():
        m, aps, mpr, _ = compute_map(ranks, g, kappas)
        out[name] = {"mAP": 100 * m, **{f"mP@{k}": 100 * float(p) for k, p in zip(kappas, mpr)}}
    return out


def classic_map(ranks: np.ndarray, positives: Sequence[Sequence[int]],
                junk: Sequence[Sequence[int]] | None = None) -> float:
    """Classic Oxford/Paris or Holidays mAP (same AP rule), in %."""
    gnd = [{"ok": p, "junk": (junk[i] if junk is not None else [])} for i, p in enumerate(positives)]
    return 100 * compute_map(ranks, gnd)[0]


def ukbench_score(ranks: np.ndarray, groups: np.ndarray, query_ids: np.ndarray | None = None) -> float:
    """UKBench N-S score: mean number of the query's 4 group images (itself included) in the top 4."""
    groups = np.asarray(groups)
    qids = np.arange(len(ranks)) if query_ids is None else np.asarray(query_ids)
    top4 = np.asarray(ranks)[:, :4]
    return float((groups[top4] == groups[qids][:, None]).sum(1).mean())


def recall_at_n(ranks: np.ndarray, positives: Sequence[Sequence[int]], ns: Sequence[int] = (1, 5, 10)) -> dict:
    """Place-recognition Recall@N in %: share of queries with a positive in the top N.
    Queries with no positive at all are left out, as in NetVLAD's evaluation."""
    ranks = np.asarray(ranks)
    hits = {n: [] for n in ns}
    for i, pos in enumerate(positives):
        pos = np.asarray(list(pos), dtype=np.int64)
        if pos.size == 0:
            continue
        found = np.flatnonzero(np.isin(ranks[i], pos))
        first = found[0] if found.size else np.inf
        for n in ns:
            hits[n].append(first < n)
    return {f"R@{n}": 100 * float(np.mean(h)) if h else float("nan") for n, h in hits.items()}


def rank1_rate(ranks: np.ndarray, positives: Sequence[Sequence[int]]) -> float:
    """Share of queries (in %) whose first result is a positive."""
    return recall_at_n(ranks, positives, (1,))["R@1"]
