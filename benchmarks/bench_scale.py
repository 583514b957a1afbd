"""Scale benchmark: build time, bytes per image, ms per query and recall@10 (against
exact search) for each index backend at growing collection sizes.

    python benchmarks/bench_scale.py [--sizes 10000 100000 1000000] [--dim 256]
        [--kinds flat hnsw ivfpq milvus-lite] [--data DIR --ray]

Descriptors are synthetic (clustered, unit norm) unless ``--descriptors FILE.npy``
names real ones. ``--ray`` also times extraction of the photos in ``--data`` (default:
the embedded photo set) with the local loop and with Ray on the same images.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np

from imret.config import IndexConfig, Preset, WhiteningConfig
from imret.index.store import Index

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_spine import table  # noqa: E402


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit-norm rows around 1000 centres: closer to real descriptors than uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(1000, dim)).astype(np.float32)
    x = centres[rng.integers(0, 1000, n)] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class Streamed:
    """A table whose rows are printed as they are measured (long runs show progress)."""

    def __init__(self, title, header, width=18):
        self.w = [max(width, len(h)) for h in header]
        print(f"\n{title}")
        print("  ".join(h.ljust(x) for h, x in zip(header, self.w)))
        print("  ".join("-" * x for x in self.w), flush=True)

    def row(self, *cells):
        print("  ".join(str(c).ljust(x) for c, x in zip(cells, self.w)), flush=True)


def make_index(kind: str, dim: int, tmp: str) -> Index:
    if kind == "milvus-lite":
        cfg = IndexConfig(kind="milvus", milvus_uri=os.path.join(tmp, "vectors.db"))
    else:
        cfg = IndexConfig(kind=kind)
    return Index(Preset(index=cfg, whitening=WhiteningConfig(kind="none")), dim)


def bench_backends(sizes, dim, kinds, n_queries, sweep=()):
    out = Streamed(f"Index backends ({dim}-d, top-10, one query at a time, {os.cpu_count()} cores)",
                   ["N", "backend", "build s", "ms/query", "recall@10", "search bytes/img", "file bytes/img"])
    for n in sizes:
        x = clustered(n, dim)
        rng = np.random.default_rng(1)
        pick = rng.choice(n, n_queries, replace=False)
        q = x[pick] + 0.3 * rng.normal(size=(n_queries, dim)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        truth = np.argpartition(-(q @ x.T), 10, axis=1)[:, :10]  # the exact top-10, as a set
        paths = [f"/bench/{i:08d}.jpg" for i in range(n)]

        def timed_search(idx):
            for i in range(20):  # warm caches and pages first: the first searches after a build are slower
                idx.search(q[i:i + 1], top=10)
            t = time.perf_counter()
            got = [idx.search(q[i:i + 1], top=10)[0] for i in range(n_queries)]
            ms = 1000 * (time.perf_counter() - t) / n_queries
            return ms, np.mean([len({h.id for h in g} & set(truth[i].tolist())) / 10 for i, g in enumerate(got)])

        for kind in kinds:
            if kind == "milvus-lite" and n > 100_000:
                out.row(f"{n:,}", kind, "-", "-", "-", "-", "skipped: Milvus Lite is for small collections")
                continue
            tmp = tempfile.mkdtemp()
            try:
                idx = make_index(kind, dim, tmp)
                t = time.perf_counter()
                idx.add_descriptors(paths, x)
                build = time.perf_counter() - t
                ms, recall = timed_search(idx)
                f = os.path.join(tmp, "b.index")
                idx.save(f)
                structure = (idx.backend.to_bytes().nbytes if idx.backend.needs_blob
                             else 4 * dim * n if kind == "flat" else float("nan"))
                out.row(f"{n:,}", kind, f"{build:.1f}", f"{ms:.2f}", f"{recall:.3f}",
                        f"{structure / n:,.0f}", f"{os.path.getsize(f) / n:,.0f}")
                if kind in ("hnsw", "hnsw-sq8", "ivfpq"):
                    for r in sweep:  # a wider shortlist on the same structure: recall bought with time
                        idx.preset = idx.preset.replace(index=idx.preset.index.replace(rescore=r))
                        ms, recall = timed_search(idx)
                        out.row(f"{n:,}", f"{kind} rescore={r}", "", f"{ms:.2f}", f"{recall:.3f}", "", "")
                del idx
            finally:
                shutil.rmtree(tmp, ignore_errors=True)


def bench_ray(data, n_images, workers):
    from imret.engines.ray_engine import RayConfig, extract_with_ray
    from imret.extractor import Extractor
    from imret.core.paths import collect_paths
    from imret.presets import get_preset

    if data:
        paths = collect_paths([data])[:n_images]
    else:
        from imret.evaluation.photoset import make_photoset

        ps = make_photoset(tempfile.mkdtemp())
        paths = (ps.db + ps.queries)[:n_images]
    preset = get_preset("fast")
    ex = Extractor(preset, device="cpu")
    t = time.perf_counter()
    ex.extract_paths(paths)
    local = time.perf_counter() - t
    shards = tempfile.mkdtemp()
    cfg = RayConfig(workers=workers, shard_size=max(1, len(paths) // (4 * workers)))
    t = time.perf_counter()
    extract_with_ray(paths, preset, shards, cfg)
    ray_s = time.perf_counter() - t
    t = time.perf_counter()
    again = extract_with_ray(paths, preset, shards, cfg)
    resume = time.perf_counter() - t
    shutil.rmtree(shards, ignore_errors=True)
    table(f"Extraction of {len(paths)} photos, preset 'fast'", ["engine", "seconds", "images/s"],
          [("local loop", f"{local:.1f}", f"{len(paths) / local:.1f}"),
           (f"ray ({workers} workers, incl. start-up)", f"{ray_s:.1f}", f"{len(paths) / ray_s:.1f}"),
           (f"ray re-run (all {again['shards']} shards done)", f"{resume:.1f}", "-")])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000],
                    help="collection sizes (none: only the extraction comparison)")
    ap.add_argument("--dim", type=int, default=256, help="descriptor size (PCA-reduced descriptors are typical)")
    ap.add_argument("--kinds", nargs="+", default=["flat", "hnsw", "hnsw-sq8", "ivfpq", "milvus-lite"])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--sweep", type=int, nargs="*", default=[1024],
                    help="also search the approximate backends with these shortlist sizes")
    ap.add_argument("--ray", action="store_true", help="also compare local and Ray extraction")
    ap.add_argument("--data", default=None)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    if args.sizes:
        bench_backends(args.sizes, args.dim, args.kinds, args.queries, args.sweep)
    if args.ray:
        bench_ray(args.data, args.images, args.workers)
    print(f"\npeak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
