"""Evaluate retrieval on a ``Dataset`` by its protocol, through the engine's own search.

The database is indexed by ``Index.build`` (as ``imret index`` does) or taken from an
index file, and every query is ranked by ``Index.search``: the backend, its exact
re-scoring, stored αDBA, the re-ranking pipeline and spatial verification are the ones
``imret search`` runs, so the figures measure what a search returns.
"""
from __future__ import annotations

import os
import time

import numpy as np

from ..core.errors import DatasetError
from ..descriptor.whitening import kind_of
from .datasets import Dataset
from .metrics import classic_map, compute_map, rank1_rate, recall_at_n, revisited_protocol, ukbench_score


def rank_all(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    """Q×D queries, N×D database rows → Q×N database indices, most similar first."""
    sims = q @ db.T
    return np.argsort(-sims, axis=1, kind="stable")


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


def _db_positions(index, dataset: Dataset) -> np.ndarray:
    """For each row of ``index``, its database position in ``dataset`` (−1: not in it)."""
    pos = {os.path.abspath(p): i for i, p in enumerate(dataset.db)}
    return np.array([pos.get(p, -1) for p in index.paths], np.int64)


def rank_dataset(index, dataset: Dataset, q: np.ndarray, rerank=None, query_local=None) -> np.ndarray:
    """Q×N rankings of the dataset's database for queries ``q`` (in the index's descriptor
    space) by ``index.search_processed``; images the search does not return (not indexed,
    or beyond an approximate backend's candidates) follow in database order."""
    where = _db_positions(index, dataset)
    n = len(dataset.db)
    hits = index.search_processed(q, top=max(len(index), 1), rerank=rerank, query_local=query_local)
    ranks = np.empty((len(q), n), np.int64)
    for qi, row in enumerate(hits):
        found = [int(where[index_pos]) for index_pos in index.positions(np.array([h.id for h in row], np.int64))]
        found = [f for f in found if f >= 0]
        seen = np.zeros(n, bool)
        seen[found] = True
        ranks[qi] = np.concatenate([np.asarray(found, np.int64), np.flatnonzero(~seen)])
    return ranks


def describe_queries(index, dataset: Dataset, local: bool = False):
    """(Q×dim query descriptors in the index's space, their local features or None, failures).
    A query that is a database image without a crop takes its stored row (and features)."""
    ex = index.extractor()
    at = {p: i for i, p in enumerate(index.paths)}
    q = np.zeros((len(dataset.queries), index.dim), np.float32)
    feats: list | None = [] if local else None
    failures = []
    for i, (path, bbox, dbi) in enumerate(zip(dataset.queries, dataset.bboxes, dataset.query_db_index)):
        stored = at.get(os.path.abspath(dataset.db[dbi])) if dbi is not None and bbox is None else None
        try:
            if stored is not None:
                q[i] = index.descriptors[stored]
                if local:
                    image_id = int(index.ids[stored])
                    store = index.local_store()
                    feats.append(store.features(image_id) if image_id in store else None)
                continue
            image = ex.load(path, bbox)  # one decode for both extractions
            q[i] = index.postprocess(ex.extract(image))[0]
            if local:
                feats.append(index.local_store().query(image))
        except Exception as exc:  # reported, and the query scores as a miss
            failures.append((path, str(exc)))
            if local and len(feats) <= i:
                feats.append(None)
    return q, feats, failures


def evaluate_index(index, dataset: Dataset, rerank=None, failures=()) -> dict:
    """Figures of searches of ``index`` (holding the dataset's database) for the dataset's queries."""
    from ..local import needs_local
    from ..rerank import Pipeline

    t0 = time.time()
    where = _db_positions(index, dataset)
    if len(dataset.db) and not (where >= 0).any():
        raise DatasetError(dataset.name, f"the index holds none of the dataset's {len(dataset.db)} database images")
    pipeline = None if rerank is None else Pipeline.parse(rerank)
    q, local, failed = describe_queries(index, dataset, local=needs_local(pipeline))
    ranks = rank_dataset(index, dataset, q, pipeline, local)
    return {"dataset": dataset.name, "protocol": dataset.protocol, "images": len(dataset.db),
            "queries": len(dataset.queries),
            "whitening": kind_of(index.whitening),
            "backend": index.backend.name, "indexed": int((where >= 0).sum()),
            "failures": list(failures) + failed, "figures": score(dataset, ranks),
            "per_query": per_query_ap(dataset, ranks),
            "rerank": None if pipeline is None else str(pipeline), "seconds": time.time() - t0}


def build_index(extractor, dataset: Dataset, preset=None, progress: bool = False, local=None, on_error=None):
    """(an in-memory index of the dataset's database, built as ``imret index`` builds one,
    by ``preset`` (default: the extractor's); skipped files). ``local``: a ``LocalExtractor``
    whose features are attached (for ``sv``)."""
    from ..index.store import Index

    if dataset.db and not any(os.path.isfile(p) for p in dataset.db):
        raise DatasetError(os.path.dirname(dataset.db[0]) or ".",
                           f"none of the {len(dataset.db)} database photos could be read (first: "
                           f"{os.path.basename(dataset.db[0])}: no such file); is the layout's image folder there?")
    index, report = Index.build(list(dataset.db), preset or extractor.preset, extractor=extractor,
                                progress=progress, on_error=on_error)
    if local is not None:
        from ..local.store import LocalStore

        index.local = LocalStore.build(index.paths, index.ids, local, progress=progress, on_error=on_error)
    return index, report.skipped


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
    """Figures of ``extractor`` on ``dataset``: its database indexed in memory by the
    extractor's preset, searched by ``Index.search``. ``whitening``: 'auto' learns
    PCA-whitening as the index would (per the preset), 'none' skips it. ``rerank``: an
    ``imret.rerank.Pipeline`` or its text ('dba,aqe'). Spatial verification ('sv')
    extracts local features with ``local`` (an ``imret.local.LocalExtractor``; default:
    one with the default ``LocalConfig``)."""
    from ..local import needs_local

    t0 = time.time()
    preset = extractor.preset
    if whitening == "none":
        preset = preset.replace(whitening=preset.whitening.replace(kind="none"))
    if needs_local(rerank) and local is None:
        from ..local.extract import LocalExtractor

        local = LocalExtractor(device=extractor.device)
    index, skipped = build_index(extractor, dataset, preset, progress, local if needs_local(rerank) else None)
    unread = {p for p, _ in skipped}
    if dataset.db and all(p in unread for p in dataset.db):
        first = next(r for p, r in skipped if p == dataset.db[0])
        raise DatasetError(os.path.dirname(dataset.db[0]) or ".",
                           f"none of the {len(dataset.db)} database photos could be read "
                           f"(first: {os.path.basename(dataset.db[0])}: {first}); is the layout's image folder there?")
    res = evaluate_index(index, dataset, rerank, failures=skipped)
    return {**res, "seconds": time.time() - t0}


def evaluate_descriptors(dataset: Dataset, db: np.ndarray, q: np.ndarray, whitening=None, rerank=None) -> dict:
    """``evaluate`` on descriptors already extracted (raw N×D database, Q×D queries), so
    several re-rankings can be compared on one extraction: an in-memory exact index of
    ``db`` (ids = database positions) searched by ``Index.search``. ``whitening``: a
    ``WhiteningConfig`` to learn PCA-whitening by, or None. A pipeline bound to database
    positions (``imret.local.evaluation.bind_dataset``) verifies as it would in ``evaluate``.
    Besides the figures, ``ranks``: the Q×N rankings (database positions) they score."""
    from ..config import Preset, WhiteningConfig
    from ..index.store import Index
    from ..rerank import Pipeline

    db = np.atleast_2d(np.asarray(db, np.float32))
    preset = Preset(whitening=whitening if whitening is not None else WhiteningConfig(kind="none"))
    index = Index.from_raw(preset, db.shape[1], [os.path.abspath(p) for p in dataset.db], db)
    pipeline = None if rerank is None else Pipeline.parse(rerank)
    ranks = rank_dataset(index, dataset, index.postprocess(q), pipeline)
    return {"dataset": dataset.name, "protocol": dataset.protocol, "images": len(dataset.db),
            "queries": len(dataset.queries), "whitening": kind_of(index.whitening), "failures": [],
            "figures": score(dataset, ranks), "per_query": per_query_ap(dataset, ranks),
            "rerank": None if pipeline is None else str(pipeline), "ranks": ranks}


def describe(extractor, dataset: Dataset, progress: bool = False):
    """(db descriptors N×D with zero rows for failures, query descriptors, failures): raw
    descriptors for ``evaluate_descriptors``."""
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
