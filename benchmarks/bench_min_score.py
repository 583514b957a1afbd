"""Where to put the "no good match" cut-off: precision and recall of calling a result a
match when its cosine reaches a threshold, on real photos with ground truth.

    python benchmarks/bench_min_score.py --data ../shared/data/paris6k-sub [--preset default fast] [--top 10]

For every query the database is ranked as ``imret search`` ranks it (the query itself,
and the junk of its ground truth, left out). Each of the top ``--top`` results is a
match when the ground truth lists it (easy or hard), a non-match when it lists it
nowhere. At each threshold t, a result is called a match when its cosine is at least t (with
the preset's re-ranking, ``--rerank``, results are ordered as it orders them; the match is
still called on the query's own cosine, as a search calls it):

- precision: of the results called matches, the share that are;
- recall: of the true matches in the top results, the share called matches;
- no-match found: of the queries whose every listed match was removed from the
  database (so the best result is a wrong one), the share whose best cosine is below t,
  i.e. that would say "no good match".
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_spine import table  # noqa: E402

from imret.descriptor.whitening import l2_normalize  # noqa: E402
from imret.evaluation.datasets import load_dataset  # noqa: E402
from imret.evaluation.evaluate import describe  # noqa: E402
from imret.extractor import Extractor  # noqa: E402
from imret.presets import get_preset  # noqa: E402
from imret.rerank import Pipeline, Shortlist, resolve  # noqa: E402

THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def ranking(q: np.ndarray, rows: np.ndarray, pipeline: Pipeline | None) -> tuple[np.ndarray, np.ndarray]:
    """(database positions best first, their cosines) for one D-vector query against N×D
    ``rows``, as a search shows them: ranked by ``pipeline``'s steps when given, each with
    the query's own cosine (a search calls matches on it, not on the re-ranked score)."""
    prepared = rows if pipeline is None else pipeline.prepare(rows)
    sims = prepared @ q
    order = np.argsort(-sims, kind="stable")
    scores = sims[order].astype(np.float32)
    if pipeline is None or not pipeline.shortlist_steps:
        return order, scores
    order = pipeline.rerank(Shortlist(q[None], order[None], scores[None]), prepared).ranks[0]
    return order, prepared[order] @ q


def labelled_pairs(dataset, q: np.ndarray, db: np.ndarray, top: int, pipeline: Pipeline | None = None):
    """(scores, is-match) of every query's top results, and each query's best wrong score
    once its matches are removed from the database (re-ranking then expands from what is
    left, as it would in an index without them)."""
    cos, truth, best_wrong = [], [], []
    for qi, g in enumerate(dataset.gnd):
        ok = set(np.concatenate([np.ravel(g.get(k, [])) for k in ("ok", "easy", "hard")]).astype(int).tolist())
        junk = set(np.ravel(g.get("junk", [])).astype(int).tolist())
        if dataset.query_db_index[qi] is not None:  # the query itself is in the database
            junk.add(int(dataset.query_db_index[qi]))
            ok.discard(int(dataset.query_db_index[qi]))
        keep = np.array([j for j in range(len(db)) if j not in junk])
        order, scores = ranking(q[qi], db[keep], pipeline)
        for j, s in list(zip(keep[order], scores))[:top]:
            cos.append(s)
            truth.append(int(j) in ok)
        left = np.array([j for j in keep if j not in ok])
        if ok and len(left):
            best_wrong.append(ranking(q[qi], db[left], pipeline)[1][0])
    return np.array(cos), np.array(truth), np.array(best_wrong)


def rows_for(cos, truth, best_wrong, thresholds=THRESHOLDS):
    rows = []
    for t in thresholds:
        called = cos >= t
        tp = int((called & truth).sum())
        precision = tp / called.sum() if called.any() else float("nan")
        recall = tp / truth.sum() if truth.any() else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
        rows.append((f"{t:.2f}", f"{precision:.3f}", f"{recall:.3f}", f"{f1:.3f}",
                     f"{(best_wrong < t).mean():.3f}"))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", required=True, help="datasets in any layout 'imret eval' reads")
    ap.add_argument("--preset", nargs="+", default=["default"])
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--rerank", default="preset", help="re-ranking steps, 'none', or 'preset' (default): "
                    "the preset's own, as a search runs them")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    for data in args.data:
        dataset = load_dataset(data)
        for name in args.preset:
            preset = get_preset(name)
            pipeline = resolve(args.rerank, preset.rerank)
            ex = Extractor(preset, device="cpu")
            db, q, failures = describe(ex, dataset)
            if failures:
                print(f"{len(failures)} photos failed, e.g. {failures[0]}")
            # as a search of an index of fewer than 500 photos compares them: L2-normalised, no whitening
            cos, truth, best_wrong = labelled_pairs(dataset, l2_normalize(q), l2_normalize(db), args.top, pipeline)
            table(f"{dataset.name}, preset {name}, re-ranking {pipeline or 'none'}: {len(dataset.queries)} "
                  f"queries, top {args.top} results each "
                  f"({int(truth.sum())} matches, {int((~truth).sum())} non-matches); "
                  f"{len(best_wrong)} queries with their matches removed",
                  ["min cosine", "precision", "recall", "F1", "no-match found"], rows_for(cos, truth, best_wrong))
            print(f"cosine of matches: median {np.median(cos[truth]):.3f}; of non-matches: median "
                  f"{np.median(cos[~truth]):.3f}")


if __name__ == "__main__":
    main()
