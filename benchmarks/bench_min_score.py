"""Where to put the "no good match" cut-off: precision and recall of calling a result a
match when its cosine reaches a threshold, on real photos with ground truth.

    python benchmarks/bench_min_score.py --data ../shared/data/paris6k-sub [--preset default fast] [--top 10]

For every query the database is ranked as ``imret search`` ranks it (the query itself,
and the junk of its ground truth, left out). Each of the top ``--top`` results is a
match when the ground truth lists it (easy or hard), a non-match when it lists it
nowhere. At each threshold t, a result is called a match when its cosine is at least t:

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

THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def labelled_pairs(dataset, sims: np.ndarray, top: int):
    """(cosines, is-match) of every query's top results, and each query's best wrong cosine
    once its matches are removed."""
    cos, truth, best_wrong = [], [], []
    for qi, g in enumerate(dataset.gnd):
        ok = set(np.concatenate([np.ravel(g.get(k, [])) for k in ("ok", "easy", "hard")]).astype(int).tolist())
        junk = set(np.ravel(g.get("junk", [])).astype(int).tolist())
        if dataset.query_db_index[qi] is not None:  # the query itself is in the database
            junk.add(int(dataset.query_db_index[qi]))
            ok.discard(int(dataset.query_db_index[qi]))
        order = [int(j) for j in np.argsort(-sims[qi], kind="stable") if int(j) not in junk]
        for j in order[:top]:
            cos.append(sims[qi, j])
            truth.append(j in ok)
        wrong = [j for j in order if j not in ok]
        if ok and wrong:
            best_wrong.append(sims[qi, wrong[0]])
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
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    for data in args.data:
        dataset = load_dataset(data)
        for name in args.preset:
            ex = Extractor(get_preset(name), device="cpu")
            db, q, failures = describe(ex, dataset)
            if failures:
                print(f"{len(failures)} photos failed, e.g. {failures[0]}")
            # as a search of an index of fewer than 500 photos compares them: L2-normalised, no whitening
            sims = l2_normalize(q) @ l2_normalize(db).T
            cos, truth, best_wrong = labelled_pairs(dataset, sims, args.top)
            table(f"{dataset.name}, preset {name}: {len(dataset.queries)} queries, top {args.top} results each "
                  f"({int(truth.sum())} matches, {int((~truth).sum())} non-matches); "
                  f"{len(best_wrong)} queries with their matches removed",
                  ["min cosine", "precision", "recall", "F1", "no-match found"], rows_for(cos, truth, best_wrong))
            print(f"cosine of matches: median {np.median(cos[truth]):.3f}; of non-matches: median "
                  f"{np.median(cos[~truth]):.3f}")


if __name__ == "__main__":
    main()
