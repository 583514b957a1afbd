"""Spine benchmark: extraction speed, search latency, index size, peak memory.

    python benchmarks/bench_spine.py [--data DIR] [--images 40] [--sizes 10000 100000]

Extraction runs on the photos in ``--data`` (default: the embedded photo set made from
scikit-image/scikit-learn photos). Search runs on synthetic unit-norm descriptors.
Prints one table per part. Threads: torch and faiss use all cores (set OMP_NUM_THREADS).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

import numpy as np
import torch

from imret.config import BackboneConfig, IndexConfig, Preset, WhiteningConfig
from imret.extractor import Extractor
from imret.index.store import Index, collect_paths
from imret.presets import get_preset


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(title, header, rows):
    print(f"\n{title}")
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    sys.stdout.flush()


def bench_extraction(paths, presets):
    rows = []
    for name, preset in presets:
        try:
            ex = Extractor(preset, device="cpu")
        except Exception as exc:  # e.g. Lite2 weights package not installed
            rows.append((name, preset.backbone.name, "-", "-", f"skipped: {exc}"[:60]))
            continue
        ex.extract_paths(paths[:2])  # warm-up
        t = time.perf_counter()
        res = ex.extract_paths(paths)
        dt = time.perf_counter() - t
        rows.append((name, preset.backbone.name, f"{len(res.paths) / dt:.2f}", f"{1000 * dt / len(res.paths):.0f}",
                     f"{ex.dim}"))
    table("Extraction (CPU, per image, whole pipeline incl. decoding)",
          ["preset", "backbone", "images/s", "ms/image", "dim"], rows)


def bench_search(sizes, dim, kinds, n_queries=200):
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        x = rng.normal(size=(n, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        q = x[rng.choice(n, n_queries, replace=False)] + 0.05 * rng.normal(size=(n_queries, dim)).astype(np.float32)
        paths = [f"/bench/{i:07d}.jpg" for i in range(n)]
        exact = None
        for kind in kinds:
            idx = Index(Preset(index=IndexConfig(kind=kind), whitening=WhiteningConfig(kind="none")), dim)
            t = time.perf_counter()
            idx.add_descriptors(paths, x)
            build = time.perf_counter() - t
            idx.search(q[:5], top=10)
            t = time.perf_counter()
            for i in range(n_queries):
                idx.search(q[i:i + 1], top=10)
            single = 1000 * (time.perf_counter() - t) / n_queries
            res = idx.search(q, top=10)
            ids = [[h.id for h in r] for r in res]
            if kind == "flat":
                exact = ids
            recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact)]) if exact else float("nan")
            with tempfile.TemporaryDirectory() as d:
                f = os.path.join(d, "b.index")
                t = time.perf_counter()
                idx.save(f)
                save = time.perf_counter() - t
                size = os.path.getsize(f)
                t = time.perf_counter()
                Index.load(f)
                load = time.perf_counter() - t
            rows.append((f"{n:,}", kind, f"{build:.2f}", f"{single:.2f}", f"{recall:.3f}", f"{size / n:,.0f}",
                         f"{save:.2f}/{load:.2f}"))
            del idx
    table(f"Search ({dim}-d descriptors, top-10, one query at a time)",
          ["N", "backend", "build s", "ms/query", "recall@10 vs flat", "file bytes/image", "save/load s"], rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="folder of photos (default: the embedded photo set)")
    ap.add_argument("--images", type=int, default=40, help="how many photos to extract per preset")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--kinds", nargs="+", default=["flat", "hnsw"])
    ap.add_argument("--skip-extraction", action="store_true")
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    if not args.skip_extraction:
        if args.data:
            paths = collect_paths([args.data])
        else:
            from imret.evaluation.photoset import make_photoset

            tmp = tempfile.mkdtemp()
            paths = make_photoset(tmp).db
            paths = [p for p in paths if "distractor" not in p] + [p for p in paths if "distractor" in p]
        paths = paths[: args.images]
        default = get_preset("default")
        presets = [("default", default), ("fast", get_preset("fast"))]
        for bb in ("efficientnet-lite2", "resnet50", "resnet101", "vgg16"):
            # Speed does not depend on the weights' values: untrained nets time the same.
            presets.append((f"default@{bb}", default.replace(backbone=BackboneConfig(bb, weights="random"))))
        bench_extraction(paths, presets)
        print(f"peak memory after extraction: {peak_rss_mb():,.0f} MB")
    bench_search(args.sizes, 1280, args.kinds)
    print(f"\npeak memory (whole run): {peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
