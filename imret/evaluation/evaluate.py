"""Evaluate an extractor on a ``Dataset`` by its protocol."""
from __future__ import annotations

import os
import time

import numpy as np

from ..descriptor.whitening import PCAWhitening, l2_normalize
from ..errors import DatasetError
from .datasets import Dataset
from .metrics import classic_map, compute_map, rank1_rate, recall_at_n, revisited_protocol, ukbench_score


def rank_all(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    """Q×D queries, N×D database rows → Q×N database indices, most similar first."""
    sims = q @ db.T
    return np.argsort(-sims, axis=1, kind="stable")


def describe(extractor, dataset: Dataset, progress: bool = False):
    """(db descriptors N×D with zero rows for failures, query descriptors, failures)."""
    res = extractor.extract_paths(dataset.db, progress=progress)
    pos = {p: i for i, p in enumerate(dataset.db)}
    db = np.zeros((len(dataset.db), extractor.dim), np.float32)
    for p, v in zip(res.paths, res.descriptors):
        db[pos[p]] = v
    failures = list(res.failures)
    q = np.zeros((len(dataset.queries), extractor.dim), np.float32)
    for i, (path, bbox, dbi) in enumerate(zip(dataset.queries, dataset.bboxes, dataset.query_db_index)):
        if dbi is not None and bbox is None:
            q[i] = db[dbi]
            continue
        try:
            q[i] = extractor.extract(path, bbox=bbox)
        except Exception as exc:  # reported, and the query scores as a miss
            failures.append((path, str(exc)))
    return db, q, failures


def score(dataset: Dataset, ranks: np.ndarray) -> dict:
    """The protocol's figures (all in %, except UKBench's N-S score out of 4)."""
    proto = dataset.protocol
    if proto == "revisited":
        return revisited_protocol(ranks, dataset.gnd)
    positives = [g["ok"] for g in dataset.gnd]
    junk = [g.get("junk", []) for g in dataset.gnd]
    if proto == "ukbench":
        return {"N-S": ukbench_score(ranks, dataset.groups, np.asarray(dataset.query_db_index))}
    if proto == "places":
        return recall_at_n(ranks, positives, (1, 5, 10))
    out = {"mAP": classic_map(ranks, positives, junk)}
    if proto in ("instances", "photoset", "holidays"):
        # Rank-1 over the ranking with the query itself removed.
        clean = [r[~np.isin(r, j)] for r, j in zip(ranks, junk)]
        width = min(len(r) for r in clean) if clean else 0
        out["R@1"] = rank1_rate(np.stack([r[:width] for r in clean]), positives) if width else float("nan")
    return out


def per_query_ap(dataset: Dataset, ranks: np.ndarray) -> list[dict]:
    """Each query's AP in % (revisited protocol: its Easy, Medium and Hard AP), None where
    the query has no positives; the query path names it."""
    def pct(v):
        return None if np.isnan(v) else round(100 * float(v), 4)

    if dataset.protocol == "revisited":
        cat = lambda *ls: np.concatenate([np.asarray(x, dtype=np.int64).ravel() for x in ls])  # noqa: E731
        setups = {"easy": [{"ok": cat(g["easy"]), "junk": cat(g["junk"], g["hard"])} for g in dataset.gnd],
                  "medium": [{"ok": cat(g["easy"], g["hard"]), "junk": cat(g["junk"])} for g in dataset.gnd],
                  "hard": [{"ok": cat(g["hard"]), "junk": cat(g["junk"], g["easy"])} for g in dataset.gnd]}
        aps = {k: compute_map(ranks, g)[1] for k, g in setups.items()}
        return [{"query": q, **{k: pct(aps[k][i]) for k in setups}} for i, q in enumerate(dataset.queries)]
    aps = compute_map(ranks, [{"ok": g["ok"], "junk": g.get("junk", [])} for g in dataset.gnd])[1]
    return [{"query": q, "ap": pct(a)} for q, a in zip(dataset.queries, aps)]


def evaluate(extractor, dataset: Dataset, whitening: str = "auto", progress: bool = False,
             rerank=None, local=None) -> dict:
    """Figures of ``extractor`` on ``dataset``. ``whitening``: 'auto' learns PCA-whitening
    on the database as the index would (per the preset), 'none' skips it. ``rerank``:
    a callable ``rerank(q, db, ranks) -> ranks``, e.g. an ``imret.rerank.Pipeline``, or
    a pipeline's text ('dba,aqe'). Spatial verification ('sv') extracts local features
    of the database and queries with ``local`` (an ``imret.local.LocalExtractor``;
    default: one with the default ``LocalConfig``)."""
    from ..local import needs_local

    t0 = time.time()
    db, q, failures = describe(extractor, dataset, progress)
    unread = {p for p, _ in failures}
    if dataset.db and all(p in unread for p in dataset.db):
        first = next(r for p, r in failures if p == dataset.db[0])
        raise DatasetError(os.path.dirname(dataset.db[0]) or ".",
                           f"none of the {len(dataset.db)} database photos could be read "
                           f"(first: {os.path.basename(dataset.db[0])}: {first}); is the layout's image folder there?")
    if needs_local(rerank):
        from ..local.evaluation import bind_dataset, describe_local
        from ..local.extract import LocalExtractor

        store, local_queries = describe_local(local or LocalExtractor(device=extractor.device), dataset, progress)
        rerank = bind_dataset(rerank, store, local_queries)
    res = evaluate_descriptors(dataset, db, q, extractor.preset.whitening if whitening == "auto" else None, rerank)
    return {**res, "failures": failures, "seconds": time.time() - t0}


def evaluate_descriptors(dataset: Dataset, db: np.ndarray, q: np.ndarray, whitening=None, rerank=None) -> dict:
    """``evaluate`` on descriptors already extracted (raw N×D database, Q×D queries), so
    several re-rankings can be compared on one extraction. ``whitening``: a
    ``WhiteningConfig`` to learn PCA-whitening by, or None."""
    wcfg = whitening
    white = None
    if wcfg is not None and wcfg.kind == "pca" and len(db) >= max(wcfg.min_images, 2):
        white = PCAWhitening.fit(db, dim=wcfg.dim, power=wcfg.power)
        db, q = white.apply(db), white.apply(q)
    else:
        db, q = l2_normalize(db), l2_normalize(q)
    ranks = rank_all(q, db)
    if isinstance(rerank, str):
        from ..rerank import Pipeline

        rerank = Pipeline.parse(rerank)
    if rerank is not None:
        ranks = rerank(q, db, ranks)
    out = score(dataset, ranks)
    return {"per_query": per_query_ap(dataset, ranks), "dataset": dataset.name, "protocol": dataset.protocol, "images": len(dataset.db),
            "queries": len(dataset.queries), "whitened": white is not None, "failures": [],
            "figures": out, "rerank": None if rerank is None else str(rerank)}
