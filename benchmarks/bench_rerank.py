"""Re-ranking benchmark: retrieval figure before/after each step on real photos, and the
time each step adds per query over a 100k-descriptor index.

    python benchmarks/bench_rerank.py [--data DIR ...] [--preset fast] [--size 100000]

Real photos: every dataset in ``--data`` (any layout ``imret eval`` reads); by default
the embedded photo set (one positive per query) and its multi-view variant (several
altered copies of each original in the database, so several positives per query; see
``imret.rerank.multiview``). Descriptors are extracted once per dataset; every step runs
on them. Timing: synthetic unit-norm descriptors in clusters; first search with faiss,
then each step on the shortlist, one query at a time (the latency a search adds) and
for a batch of queries. Threads: set OMP_NUM_THREADS (e.g. 2) to measure on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_spine import table  # noqa: E402

from imret.descriptor.whitening import l2_normalize  # noqa: E402
from imret.evaluation.datasets import load_dataset  # noqa: E402
from imret.evaluation.evaluate import describe, evaluate_descriptors  # noqa: E402
from imret.extractor import Extractor  # noqa: E402
from imret.index.backends import FlatBackend  # noqa: E402
from imret.presets import get_preset  # noqa: E402
from imret.rerank import DBA, AugmentedRows, Pipeline, Shortlist  # noqa: E402

STEPS = ["qe", "aqe", "dba", "gfr", "kreciprocal", "dba,aqe", "dba,gfr", "aqe,kreciprocal"]


def figure_name(figures: dict) -> str:
    return "mAP" if "mAP" in figures else next(iter(figures))


def headline(figures: dict) -> float:
    if "medium" in figures:  # revisited Oxford/Paris: Medium mAP
        return figures["medium"]["mAP"]
    return figures[figure_name(figures)]


def bench_real(datasets, preset_name: str, steps):
    ex = Extractor(get_preset(preset_name), device="cpu")
    for name, root in datasets:
        ds = load_dataset(root)
        t = time.perf_counter()
        db, q, failures = describe(ex, ds)
        took = time.perf_counter() - t
        wcfg = ex.preset.whitening
        base = evaluate_descriptors(ds, db, q, wcfg)
        fig = "Medium mAP" if "medium" in base["figures"] else figure_name(base["figures"])
        before = headline(base["figures"])
        rows = [("(none)", f"{before:.2f}", "-", f"{before:.2f}", "+0.00", "-", "-")]
        for spec in steps:
            pipe = Pipeline.parse(spec)
            after = headline(evaluate_descriptors(ds, db, q, wcfg, pipe)["figures"])
            short = shortlist_only(pipe)
            old = "-" if short is None else f"{headline(evaluate_descriptors(ds, db, q, wcfg, short)['figures']):.2f}"
            ms, dba_ms = time_on_dataset(pipe, db, q)
            rows.append((spec, f"{before:.2f}", old, f"{after:.2f}", f"{after - before:+.2f}", f"{ms:.2f}",
                         "-" if dba_ms is None else f"{dba_ms:.0f}"))
        table(f"{name}: {len(ds.db)} images, {len(ds.queries)} queries, preset {preset_name}, "
              f"{fig} (extraction {took:.0f} s{', %d failures' % len(failures) if failures else ''}; "
              f"load {os.getloadavg()[0]:.1f})",
              ["steps", f"{fig} before", "after, shortlist only", "after, whole-database re-query", "change",
               "ms/query (rerank)", "dba ms (whole db)"], rows)


def shortlist_only(pipe: Pipeline) -> Pipeline | None:
    """``pipe`` with its expansion steps re-scoring their shortlist only (the earlier reading);
    None when it has none."""
    if not any(hasattr(s, "scope") for s in pipe.steps):
        return None
    return Pipeline(tuple(s.replace(scope="shortlist") if hasattr(s, "scope") else s for s in pipe.steps))


def best_ms(fn, repeats: int = 3) -> float:
    """The fastest of ``repeats`` runs of ``fn`` in ms: on a shared machine the others
    measure the neighbours' load as much as the code."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t) * 1000)
    return best


def one_at_a_time(pipe: Pipeline, q, ranks, scores, rows) -> float:
    """ms per query for the shortlist steps, queries re-ranked one by one (a search's latency)."""
    def run():
        for i in range(len(q)):
            pipe.rerank(Shortlist(q[i:i + 1], ranks[i:i + 1], scores[i:i + 1]), rows)
    return best_ms(run) / len(q)


def time_on_dataset(pipe: Pipeline, db, q):
    """ms per query for the shortlist steps, and ms for dba over the database."""
    db, q = l2_normalize(db), l2_normalize(q)
    dba_ms = best_ms(lambda: pipe.prepare(db)) if pipe.database_step else None
    rows = pipe.prepare(db)
    sims = q @ rows.T
    ranks = np.argsort(-sims, axis=1)[:, :min(pipe.depth, len(rows))]
    return one_at_a_time(pipe, q, ranks, np.take_along_axis(sims, ranks, 1), rows), dba_ms


def synthetic(n: int, dim: int, n_queries: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit-norm rows (groups of 5 views) and queries near the first clusters."""
    groups = n // 5
    centres = rng.standard_normal((groups, dim), dtype=np.float32)
    x = np.repeat(centres, 5, 0)
    x += 0.8 * rng.standard_normal(x.shape, dtype=np.float32)
    q = centres[:n_queries] + 0.8 * rng.standard_normal((n_queries, dim), dtype=np.float32)
    return l2_normalize(x), l2_normalize(q)


def bench_latency(n: int, dim: int, n_queries: int, shortlist: int, steps):
    rng = np.random.default_rng(0)
    x, q = synthetic(n, dim, n_queries, rng)
    backend = FlatBackend(dim, None)
    backend.add(np.arange(len(x), dtype=np.int64), x)
    search_ms = best_ms(lambda: [backend.search(q[i:i + 1], shortlist) for i in range(n_queries)]) / n_queries
    scores, ranks = backend.search(q, shortlist)
    rows = [("first search (faiss flat)", f"{search_ms:.2f}", "-")]
    for spec in [s for s in steps if not s.startswith("dba")]:
        pipe = Pipeline(tuple(s.replace(shortlist=shortlist) for s in Pipeline.parse(spec).steps))
        one = one_at_a_time(pipe, q, ranks, scores, x)
        batch = best_ms(lambda: pipe.rerank(Shortlist(q, ranks, scores), x)) / n_queries
        rows.append((spec, f"{one:.2f}", f"{batch:.2f}"))
    threads = os.environ.get("OMP_NUM_THREADS", f"all {os.cpu_count()}")
    table(f"Re-ranking a shortlist of {shortlist} over {n:,} descriptors of {dim}-d ({threads} threads), ms per query",
          ["step", "one query at a time", "in a batch of %d" % n_queries], rows)
    del backend


def bench_dba(n: int, dim: int, added: int):
    rng = np.random.default_rng(1)
    x, _ = synthetic(n + added, dim, 1, rng)
    t = time.perf_counter()
    state = AugmentedRows.build(DBA(), x[:n])
    build = time.perf_counter() - t
    t = time.perf_counter()
    _, changed = state.with_added(x)
    add = time.perf_counter() - t
    table(f"αDBA at index time ({dim}-d, k={DBA().k})", ["rows", "build from scratch s", f"add {added} rows s",
                                                          "rows augmented again on add"],
          [(f"{n:,}", f"{build:.2f}", f"{add:.3f}", f"{len(changed)}")])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", nargs="*", default=None, help="dataset folders (default: the embedded photo sets)")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--steps", nargs="+", default=STEPS)
    ap.add_argument("--size", type=int, default=100_000, help="descriptors for the latency table")
    ap.add_argument("--dim", type=int, default=1280, help="descriptor size for the latency table (Lite0: 1280)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--shortlist", type=int, default=100)
    ap.add_argument("--dba-size", type=int, default=20_000, help="rows for the αDBA build/add timing")
    ap.add_argument("--skip-real", action="store_true", help="only the synthetic timing tables")
    args = ap.parse_args(argv)
    if not args.skip_real:
        with tempfile.TemporaryDirectory() as tmp:
            if args.data:
                datasets = [(os.path.basename(os.path.normpath(d)), d) for d in args.data]
            else:
                from imret.rerank.multiview import make_multiview_set

                mv = make_multiview_set(os.path.join(tmp, "multiview"))
                datasets = [("embedded photo set (1 positive per query)", os.path.join(tmp, "multiview", "base")),
                            ("multi-view photo set (several positives per query)", mv.root)]
            bench_real(datasets, args.preset, args.steps)
    bench_latency(args.size, args.dim, args.queries, args.shortlist, args.steps)
    bench_dba(args.dba_size, args.dim, 100)


if __name__ == "__main__":
    main()
