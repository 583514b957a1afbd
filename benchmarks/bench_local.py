"""Local-feature benchmark: extraction speed, bytes per image, verification time, rank-1.

    python benchmarks/bench_local.py [--data DIR] [--configs delf fast] [--preset fast]
                                     [--shortlist 100] [--threads 1] [--train-steps 0]

Photos: ``--data`` (any layout ``imret eval`` reads), by default the embedded photo set
with 100 distractors (120 database images, so that a top-100 shortlist is full).
Global descriptors (``--preset``) are extracted once; then, per local configuration:
extraction ms per image (database and queries, decoding included), bytes per image
(raw: float32 keypoints, scales, scores and 40-d descriptors; PQ: as stored; file: the
HDF5 file over its images), verification ms per query for the top-``shortlist``
(matching, RANSAC and PQ decoding of the candidates), and rank-1 / mAP of global search
before and after ``sv`` re-ranking, with rank-1 per kind of query. Keypoint attention: the
weights the package ships for the configuration (what ``imret index --local`` uses), else
untrained (feature norm); ``--untrained`` adds the untrained rows beside the shipped ones.
``--train-steps N`` adds a row with an attention network trained N steps on the database
photos (unsupervised: every photo its own instance, strong augmentations as views).
Threads: ``--threads N`` sets torch, BLAS and OpenMP threads (default: the libraries').
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

from imret.evaluation.datasets import load_dataset  # noqa: E402
from imret.evaluation.evaluate import describe, evaluate_descriptors  # noqa: E402
from imret.extractor import Extractor  # noqa: E402
from imret.local.config import LOCAL_CONFIGS  # noqa: E402
from imret.local.evaluation import bind_dataset, describe_local  # noqa: E402
from imret.local.extract import LocalExtractor  # noqa: E402
from imret.presets import get_preset  # noqa: E402
from imret.rerank import Shortlist  # noqa: E402


def kind_of(path: str) -> str:
    name = os.path.basename(path)
    return name.split("__")[1].rsplit(".", 1)[0] if "__" in name else "query"


def rank1_by_kind(dataset, ranks) -> str:
    # revisited ground truth: the Medium positives (easy and hard); the first result that is
    # not junk (the protocol ignores junk, e.g. the query photo itself)
    def first(r, g):
        junk = set(np.asarray(g.get("junk", []), np.int64).tolist())
        return next((int(i) for i in r if int(i) not in junk), -1)

    ok = np.array([first(r, g) in set(np.asarray(g.get("ok", list(g.get("easy", [])) + list(g.get("hard", []))),
                                                  np.int64).tolist()) for r, g in zip(ranks, dataset.gnd)])
    kinds = np.array([kind_of(q) for q in dataset.queries])
    return " ".join(f"{k} {ok[kinds == k].sum()}/{(kinds == k).sum()}" for k in sorted(set(kinds)))


def figures_text(figs: dict) -> tuple[str, str]:
    """(R@1 or Easy/Medium/Hard mAP, mAP or Hard mAP) of ``score``'s figures, as text."""
    if "hard" in figs:  # revisited protocol
        return (" / ".join(f"{figs[k]['mAP']:.1f}" for k in ("easy", "medium", "hard")), f"{figs['hard']['mAP']:.1f}")
    return f"{figs['R@1']:.1f}", f"{figs['mAP']:.1f}"


def local_only_ranks(store, local_queries, mode: str, n_db: int, shortlist: int) -> tuple[np.ndarray, float]:
    """Q×N rankings by local features alone (``imret.local.search``; images the mode does
    not return follow in database order) and ms per query."""
    from imret.local.search import LocalSearch

    state = LocalSearch(store)
    state.search(mode, local_queries[0], top=1, shortlist=1)  # builds the structure (not timed)
    ranks, t = [], time.perf_counter()
    for f in local_queries:
        got = [h.image_id for h in state.search(mode, f, top=n_db, shortlist=shortlist)] if f is not None else []
        ranks.append(got + [i for i in range(n_db) if i not in set(got)])
    return np.asarray(ranks), 1000 * (time.perf_counter() - t) / len(local_queries)


def verification_ms(store, local_queries, first_ranks, spec: str, n: int = 20) -> float:
    """Mean ms to verify one query's shortlist, over the first ``n`` queries."""
    times = []
    for i in range(min(n, len(local_queries))):
        step = bind_dataset(spec, store, [local_queries[i]]).steps[0]
        ranks = first_ranks[i:i + 1, :step.shortlist]
        sl = Shortlist(np.zeros((1, 1), np.float32), ranks, np.zeros(ranks.shape, np.float32))
        t = time.perf_counter()
        step(sl, None)
        times.append(1000 * (time.perf_counter() - t))
    return float(np.mean(times))


def _cache_path(folder: str | None, ds, name: str) -> str | None:
    if not folder:
        return None
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"bench-local-{ds.name}-{name}")


def _save_cached(stem: str, store, queries, ms: float) -> None:
    """The store as the index saves it; the queries' (reduced) features as arrays."""
    store.save(stem + ".local.h5")
    arrays = {"ms": np.array(ms)}
    for i, f in enumerate(queries):
        if f is not None:
            arrays.update({f"{i}/xy": f.xy, f"{i}/scales": f.scales, f"{i}/scores": f.scores,
                           f"{i}/descriptors": f.descriptors, f"{i}/size": np.asarray(f.size)})
    np.savez(stem + ".queries.npz", n=np.array(len(queries)), **arrays)


def _load_cached(stem: str):
    from imret.local.features import LocalFeatures
    from imret.local.store import LocalStore

    store = LocalStore.open(stem + ".local.h5")
    z = np.load(stem + ".queries.npz")
    queries = [LocalFeatures(z[f"{i}/xy"], z[f"{i}/scales"], z[f"{i}/scores"], z[f"{i}/descriptors"],
                             tuple(int(v) for v in z[f"{i}/size"])) if f"{i}/xy" in z else None
               for i in range(int(z["n"]))]
    return store, queries, float(z["ms"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="dataset folder (default: the embedded photo set)")
    ap.add_argument("--configs", nargs="+", default=["fast", "delf"], choices=sorted(LOCAL_CONFIGS))
    ap.add_argument("--preset", default="fast", help="global preset of the first search")
    ap.add_argument("--shortlist", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--train-steps", type=int, default=0)
    ap.add_argument("--untrained", action="store_true", help="also the untrained keypoint attention")
    ap.add_argument("--widen", type=int, default=50, help="a row with sv:widen=N (0: none)")
    ap.add_argument("--cache", default=None, help="keep each config's extracted local features here (reruns "
                                                   "score other recipes without extracting again)")
    ap.add_argument("--sv", nargs="*", default=["score=inliers"],
                    help="more verification rows on the same features: options added to sv's (e.g. score=inliers)")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    tmp = tempfile.mkdtemp(prefix="bench-local-")
    if args.data is None:
        from imret.evaluation.photoset import make_photoset

        args.data = os.path.join(tmp, "photoset")
        make_photoset(args.data, n_distractors=100)
    ds = load_dataset(args.data)
    print(f"{ds.name}: {len(ds.db)} database images, {len(ds.queries)} queries; "
          f"torch threads {torch.get_num_threads()}; global preset {args.preset}")
    t = time.perf_counter()
    db, q, failures = describe(Extractor.from_preset(args.preset, device="cpu"), ds)
    global_ms = 1000 * (time.perf_counter() - t) / (len(ds.db) + len(ds.queries))
    wcfg = get_preset(args.preset).whitening
    glob = evaluate_descriptors(ds, db, q, wcfg)
    first_ranks = glob["ranks"]
    spec = f"sv:shortlist={args.shortlist}"

    from imret.local.train import shipped_attention_state

    runs = []
    for name in args.configs:
        cfg = LOCAL_CONFIGS[name]
        state = shipped_attention_state(cfg)  # what 'imret index --local NAME' uses
        runs.append((name + ("+shipped" if state is not None else ""), cfg, state))
        if args.untrained and state is not None:
            runs.append((name + "+untrained", cfg, None))
    if args.train_steps:
        from imret.local.train import AttentionTrainConfig, train_attention

        name = args.configs[0]
        root = os.path.join(tmp, "train")
        os.makedirs(root)
        for p in ds.db:  # the database photos, as a folder of unlabeled photos
            os.symlink(os.path.abspath(p), os.path.join(root, os.path.basename(p)))
        res = train_attention(root, LOCAL_CONFIGS[name], AttentionTrainConfig(steps=args.train_steps))
        runs.append((f"{name}+trained", LOCAL_CONFIGS[name], res.state))

    from imret.evaluation.evaluate import score

    speed, size, quality = [], [], [("global only", args.preset, "-", *figures_text(glob["figures"]),
                                     rank1_by_kind(ds, first_ranks))]
    for name, cfg, state in runs:
        ex = LocalExtractor(cfg, state, device="cpu")
        cached = _cache_path(args.cache, ds, name)
        if cached and os.path.exists(cached + ".local.h5"):
            store, local_queries, ms = _load_cached(cached)
        else:
            ex.extract(ex.load(ds.db[0]))  # warm-up
            t = time.perf_counter()
            store, local_queries = describe_local(ex, ds)
            ms = 1000 * (time.perf_counter() - t) / (len(ds.db) + len(ds.queries))
            if cached:
                _save_cached(cached, store, local_queries, ms)
        b = store.bytes_per_image()
        path = os.path.join(tmp, f"{name}.local.h5")
        store.save(path)
        speed.append((name, f"{cfg.max_size}", " ".join(f"{s:g}" for s in cfg.scales), f"{ms:.0f}",
                      f"{global_ms:.0f}", f"{verification_ms(store, local_queries, first_ranks, spec):.0f}"))
        size.append((name, f"{b['features']:.0f}", f"{b['raw'] / 1024:.1f}", f"{b['stored'] / 1024:.1f}",
                     f"{os.path.getsize(path) / len(store) / 1024:.1f}"))
        variants = [spec] + [f"{spec},{extra}" for extra in args.sv] + (
            [f"{spec},widen={args.widen}"] if args.widen else [])
        for variant in variants:
            got = evaluate_descriptors(ds, db, q, wcfg, bind_dataset(variant, store, local_queries))
            widen = args.widen if "widen=" in variant else 0
            quality.append((f"+ {variant}", name, f"{min(args.shortlist + widen, len(ds.db))}",
                            *figures_text(got["figures"]), rank1_by_kind(ds, got["ranks"])))
        for mode in ("local", "asmk"):
            ranks, mode_ms = local_only_ranks(store, local_queries, mode, len(ds.db), args.shortlist)
            quality.append((f"--mode {mode} ({mode_ms:.0f} ms/query)", name,
                            f"{min(args.shortlist, len(ds.db))}" if mode == "local" else "-",
                            *figures_text(score(ds, ranks)), rank1_by_kind(ds, ranks)))
    table("Speed (CPU; extraction per image incl. decoding; verification per query)",
          ["local", "max side", "scales", "local ms/image", "global ms/image", f"verify top-{args.shortlist} ms"],
          speed)
    table("Storage per image", ["local", "features", "raw KiB", "PQ KiB", "file KiB"], size)
    revisited = "hard" in glob["figures"]
    table(f"Retrieval (load {os.getloadavg()[0]:.1f})",
          ["ranking", "local", "shortlist", "mAP E/M/H" if revisited else "R@1", "Hard mAP" if revisited else "mAP",
           "rank-1 by kind"], quality)
    return 0


if __name__ == "__main__":
    sys.exit(main())
