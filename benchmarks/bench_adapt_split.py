"""What ``--adapt`` gives to queries it never saw, beside queries from the collection it adapted to.

    python benchmarks/bench_adapt_split.py [--presets NAME…] [--seeds N…] [--tuned FILE] [--rerank own|STEPS]
                                           [--attention-lr LR]

``paris6k-sub``'s queries are photos of its database (each query's own photo is junk to
it), so ``bench_adapt.py`` scores ``--adapt`` on queries whose photos the adaptation
trained on. That is one use (search a collection by one of its photos), and the one that
flatters adaptation most: with mined positives (``TrainConfig.mine``) the head learns which
photos of the collection verification links, and a query that is one of them meets its
group. A user's new photo was in no group. Here the database photos are split in two
halves by position (even / odd: no label is read), and each half in turn is the
collection: ``--adapt`` trains on its photos alone and the index holds them alone. The
queries whose photos lie in the other half are new to the head and to the index ("new
queries"); those whose photos lie in the half are the collection's own ("own queries").
Ground truth is the revisited protocol's, restricted to the half (queries left without a
positive there are dropped). The base head is each preset's recipe on the 66 other
training photos, as ``bench_adapt.py`` makes it (``--tuned``: its stages trained without
Paris photos). Rows: GeM on the same backbone, the base head, ``--adapt`` with augmentations
only (as it was before 2026-12-07), ``--adapt`` as it is (mined positives), each blended as
``--adapt`` blends and whole. Means over the seeds and both halves close the table.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import head_maps  # noqa: E402
from ablation import summary  # noqa: E402
from bench_spine import table  # noqa: E402

from imret.evaluation.datasets import Dataset  # noqa: E402
from imret.heads import build_head  # noqa: E402
from imret.presets import get_preset  # noqa: E402
from imret.training import train  # noqa: E402
from imret.training.adapt import ADAPT, ADAPT_BLEND, blend  # noqa: E402
from imret.training.mine import MineConfig  # noqa: E402
from imret.training.probe import DatasetMaps, figures  # noqa: E402
from imret.training.recipes import SHIPPED_RECIPES, TRAIN_DATA, adapt_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTION = "paris6k-sub"


def position_halves(n: int) -> list[list[int]]:
    """The database's two halves by position (even and odd images): no label is read."""
    return [list(range(0, n, 2)), list(range(1, n, 2))]


def half_maps(maps: DatasetMaps, db_keep: list[int], query_photos: set[int], name: str) -> DatasetMaps:
    """``maps`` with the database cut to ``db_keep`` and the queries to those whose photo
    (their database index) is in ``query_photos``; ground truth restricted to the cut."""
    ds = maps.dataset
    where = {os.path.realpath(p): i for i, p in enumerate(ds.db)}
    photo = [where[os.path.realpath(q)] for q in ds.queries]
    remap = {i: k for k, i in enumerate(db_keep)}
    qs, gnd = [], []
    for q, g in enumerate(ds.gnd):
        if photo[q] not in query_photos:
            continue
        cut = {k: np.asarray([remap[i] for i in g[k] if i in remap], np.int64) for k in ("easy", "hard", "junk")}
        if len(cut["easy"]) + len(cut["hard"]):
            qs.append(q)
            gnd.append(cut)
    sub = Dataset(name, ds.protocol, [ds.db[i] for i in db_keep], [ds.queries[q] for q in qs], gnd,
                  [ds.bboxes[q] for q in qs])
    return DatasetMaps(sub, [maps.db[i] for i in db_keep], [maps.queries[q] for q in qs], maps.scales)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["lite0-selfsim"], choices=sorted(SHIPPED_RECIPES))
    ap.add_argument("--data", "--data-root", dest="data_root", default=os.path.join(REPO, "..", "shared", "data"))
    ap.add_argument("--cache", default=os.path.join(REPO, ".cache"))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tuned", default=None, metavar="FILE",
                    help="tuned backbone stages in place of those of the presets that have them")
    ap.add_argument("--attention-lr", type=float, default=None,
                    help="ADAPT's TrainConfig.attention_lr (ICSA's and IA's weights at their own rate; "
                         "default: as --adapt, the recipe's multiple of lr)")
    ap.add_argument("--rerank", default=None, metavar="own|STEPS",
                    help="score after these re-ranking steps ('own': each preset's bundled ones) instead of none")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = os.path.normpath(args.data_root)
    others = [os.path.join(root, d) for d in TRAIN_DATA if not d.startswith(COLLECTION)]
    collection = [os.path.join(root, COLLECTION, "jpg")]
    print(f"load {os.getloadavg()[0]:.2f}; torch {torch.get_num_threads()} thread(s)", flush=True)
    white = get_preset("default").whitening
    rows, means = [], {}

    for name in args.presets:
        preset = head_maps.with_tuned(get_preset(name), args.tuned)
        ex = head_maps.extractor(512, preset.backbone)
        paris = head_maps.eval_maps(ex, os.path.join(root, COLLECTION), args.cache)
        rerank = (preset.rerank if args.rerank == "own" else args.rerank) or None
        n = len(paris.dataset.db)
        halves = position_halves(n)
        splits = []
        for k, half in enumerate(halves):
            rest = set(halves[1 - k])
            splits.append((half, half_maps(paris, half, rest, f"new-{k}"), half_maps(paris, half, set(half), f"own-{k}")))

        def row(seed, half, what, state, new, own, head_cfg=None, key=None):
            head = build_head(head_cfg or preset.head, ex.backbone.out_channels)
            if state is not None:
                head.load_state_dict(state)
            got = [figures(head, m, white, rerank) for m in (new, own)]
            rows.append((name, seed, half, what, *summary(got[0]), *summary(got[1])))
            means.setdefault((name, (key or what).strip()), []).append(
                [g[k]["mAP"] for g in got for k in ("easy", "medium", "hard")])
            print("  " + "  ".join(map(str, rows[-1])), flush=True)

        gem = get_preset("lite0-gem-tuned" if preset.backbone.tuned else "default").head
        for k, (half, new, own) in enumerate(splits):
            row("", k, "GeM on the same backbone", None, new, own, head_cfg=gem)
        for seed in args.seeds:
            # the shipped recipe at this one seed (train_shipped.py ships the soup of its seeds)
            one = replace(SHIPPED_RECIPES[name], seeds=(seed,))
            base = one.shipped_state(one.run(preset, lambda s: head_maps.view_bank(ex, others, one.config.views, s,
                                                                                   args.cache)))
            cfg = adapt_config(name, ADAPT.replace(max_size=preset.extraction.max_size, seed=seed,
                                                   attention_lr=args.attention_lr))
            bank = head_maps.view_bank(ex, collection, cfg.views, seed, args.cache)
            local = head_maps.local_features(bank.paths, MineConfig(), args.cache)
            in_bank = {os.path.realpath(p): i for i, p in enumerate(bank.paths)}
            for k, (half, new, own) in enumerate(splits):
                keep = sorted(in_bank[os.path.realpath(paris.dataset.db[i])] for i in half)
                sub = bank.relabel(list(range(len(bank.paths))), keep=keep)
                row(seed, k, "base: recipe on the 66 other photos", base, new, own)
                t = time.time()
                plain = train(preset, cfg.replace(mine=False), None, bank=sub, start=base).head_state
                row(seed, k, "  + --adapt, augmentations only", blend(base, plain, ADAPT_BLEND), new, own)
                row(seed, k, "  + --adapt, augmentations only, blend 1", plain, new, own)
                res = train(preset, cfg, None, bank=sub, start=base, local_features=[local[i] for i in keep])
                row(seed, k, f"  + --adapt ({res.mined.links} links, {res.mined.instances} instances)",
                    blend(base, res.head_state, ADAPT_BLEND), new, own, key="+ --adapt")
                row(seed, k, "  + --adapt, blend 1", res.head_state, new, own)
                print(f"    ({time.time() - t:.0f} s for both adaptations)", flush=True)
    cols = ["Easy", "Medium", "Hard"]
    table(f"--adapt on half of paris6k-sub, queries new to it / its own; mAP %, centred on the half; "
          f"re-ranking: {args.rerank or 'none'}; attention lr {args.attention_lr or 'as --adapt'}; "
          f"load {os.getloadavg()[0]:.2f}",
          ["preset", "seed", "half", "head", *[f"new {c}" for c in cols], *[f"own {c}" for c in cols]], rows)
    table("means over seeds and halves", ["preset", "head", "runs", *[f"new {c}" for c in cols],
                                           *[f"own {c}" for c in cols]],
          [(p, w, len(v), *[f"{x:.1f}" for x in np.mean(v, 0)]) for (p, w), v in means.items()])


if __name__ == "__main__":
    main()
