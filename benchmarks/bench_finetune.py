"""Label-free training with the backbone's last stages unfrozen, against the frozen recipe.

    python benchmarks/bench_finetune.py [--data ../shared/data] [--device cpu|cuda]
                                        [--rows I …] [--steps N] [--seed S] [--threads 1]
                                        [--train-data FOLDER …] [--save DIR]

The shipped heads train on cached maps of a frozen backbone. NetVLAD (Arandjelović et
al.) and most global-descriptor papers fine-tune the CNN's last layers too; this
benchmark asks whether that would help here: each row trains ``preset``'s head and
``train_blocks`` of EfficientNet-Lite0's last stages (1: the 320→1280 head conv; 2: and
the last MBConv block; 3: one block more) with the shipped recipe's protocol (the photos of
``TRAIN_DATA``, each its own instance, 4 views, 512 px, triplet), at ``lr`` for all
trained parameters, then scores paris6k-sub (Easy/Medium/Hard mAP, centred on the
database mean as ``imret eval`` scores them) and ukbench (N-S) with the fine-tuned
backbone. ``train_blocks`` 0 rows are the frozen recipe, trained the same way here.

Rows with the backbone training run its trained stages on every step's 48 views and on
every view at each pool refresh (the maps entering them are computed once, as ``imret
train --train-blocks`` does), then extract the scored photos with it: 25-90 s per row on
an H200 (before that caching), 190-330 s per row of two stages on one CPU thread beside
another such run, self-similarity 460-510 s. The 'default' GeM head has no parameters, so
its rows train the backbone alone, as cirtorch does.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_spine import table  # noqa: E402
from head_maps import SCALES, extractor  # noqa: E402

from imret.core.paths import collect_paths  # noqa: E402
from imret.evaluation.datasets import load_dataset  # noqa: E402
from imret.heads import build_head  # noqa: E402
from imret.presets import get_preset  # noqa: E402
from imret.training import train  # noqa: E402
from imret.training.bank import ViewBank  # noqa: E402
from imret.training.probe import dataset_maps, figures  # noqa: E402
from imret.training.recipes import SHIPPED_RECIPES, TRAIN_DATA  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# preset, train_blocks, lr, steps (0 steps: scored untrained)[, head parameters changed from the preset's]
ROWS = [
    ("default", 0, 0.0, 0),
    ("lite0-icsa-netvlad", 0, 1e-3, 150),
    ("lite0-icsa-netvlad", 1, 1e-4, 150),
    ("default", 1, 1e-4, 150),
    ("lite0-dagf", 0, 1e-3, 150),
    ("lite0-dagf", 1, 1e-4, 150),
    ("default", 2, 1e-4, 150),
    ("lite0-icsa-netvlad", 2, 1e-4, 150),
    ("lite0-selfsim", 1, 1e-4, 150),
    ("default", 1, 1e-5, 150),
    ("lite0-icsa-netvlad", 1, 1e-4, 400),
    ("default", 1, 1e-4, 400),
    ("lite0-icsa-netvlad", 3, 1e-4, 150),
    ("lite0-icsa-netvlad", 2, 3e-4, 150),
    ("lite0-ia-netvlad", 2, 1e-4, 150),
    ("lite0-regional", 2, 1e-4, 150),
    ("lite0-selfsim", 2, 1e-4, 150),
    ("lite0-dagf", 2, 1e-4, 150),
    ("lite0-icsa-netvlad", 2, 1e-4, 150, {"placement": "no-l2"}),
]


def save_row(path: str, name: str, blocks: int, head, ex, args) -> None:
    """One trained row as a plain tensor dict: the head's state and, when backbone stages
    trained, the backbone's whole state (what ``bench_soup.py`` averages)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    obj = {"preset": name, "train_blocks": blocks, "seed": args.seed, "train_data": list(args.train_data),
           "head": {k: v.detach().cpu() for k, v in head.state_dict().items()}}
    if ex is not None:
        obj["backbone"] = {k: v.detach().cpu() for k, v in ex.backbone.net.state_dict().items()}
    torch.save(obj, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rows", type=int, nargs="+", default=None, help="indices into ROWS (default: all)")
    ap.add_argument("--steps", type=int, default=None, help="override every trained row's steps")
    ap.add_argument("--seed", type=int, default=0, help="the recipe's seed (views, steps) for every row")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-data", nargs="+", default=list(TRAIN_DATA),
                    help="folders under --data whose photos train, each its own instance (default: the shipped "
                         "heads' TRAIN_DATA); e.g. 'ukbench/full fordham-places' to train on photos unlike the scored")
    ap.add_argument("--save", default=None, metavar="DIR",
                    help="write each trained row's head and backbone weights to DIR (for bench_soup.py)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    paths = collect_paths([os.path.join(args.data, d) for d in args.train_data])
    paris = load_dataset(os.path.join(args.data, "paris6k-sub"))
    ukb = load_dataset(os.path.join(args.data, "ukbench"))
    frozen = extractor(512, device=args.device)
    images = ViewBank(frozen, paths, list(range(len(paths))), 4, args.seed, cache=False)
    banks: dict[int, dict] = {}  # train blocks → the same views' maps entering them, computed once

    def bank_for(ex, blocks: int) -> ViewBank:
        if blocks not in banks:
            banks[blocks] = images.cached(blocks).state()
        return ViewBank.from_state(ex, banks[blocks])

    def scored_maps(ex):  # the scored photos' maps through ex's backbone: paris6k-sub, ukbench
        return dataset_maps(ex, paris, scales=SCALES), dataset_maps(ex, ukb, scales=SCALES)

    frozen_eval = scored_maps(frozen)
    print(f"{len(paths)} photos, {len(images)} views, ready in {time.time() - t0:.0f} s on "
          f"{args.device}; torch {torch.get_num_threads()} thread(s); load {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for name, blocks, lr, steps, *more in [ROWS[i] for i in args.rows] if args.rows else ROWS:
        t = time.time()
        changed = more[0] if more else {}
        preset = get_preset(name)
        if changed:
            preset = preset.replace(head=preset.head.replace(params={**preset.head.params, **changed}))
        steps = args.steps if args.steps and steps else steps
        ex = frozen if blocks == 0 else extractor(512, device=args.device)
        head = build_head(preset.head, ex.backbone.out_channels).to(args.device)
        if steps:
            cfg = SHIPPED_RECIPES.get(name, SHIPPED_RECIPES["lite0-dagf"]).config
            cfg = cfg.replace(train_blocks=blocks, lr=lr, steps=steps, checkpoint_every=steps, seed=args.seed)
            head.load_state_dict(train(preset, cfg, None, bank=bank_for(ex, blocks)).head_state)
            if args.save:
                tag = "".join(f"-{k}-{v}" for k, v in changed.items())
                save_row(os.path.join(args.save, f"{name}{tag}-b{blocks}-lr{lr:g}-n{steps}-s{args.seed}.pt"),
                         name, blocks, head, ex if blocks else None, args)
        ev = frozen_eval if blocks == 0 else scored_maps(ex)
        p, u = figures(head, ev[0], preset.whitening), figures(head, ev[1], preset.whitening)
        label = name + "".join(f", {k}={v}" for k, v in changed.items())
        rows.append((label, blocks, lr or "-", steps or "untrained",
                     *(f"{p[k]['mAP']:.1f}" for k in ("easy", "medium", "hard")), f"{u['N-S']:.3f}",
                     f"{time.time() - t:.0f}"))
        print("  ".join(map(str, rows[-1])), flush=True)
    table(f"Label-free training with backbone stages unfrozen, seed {args.seed}; paris6k-sub mAP % (centred), "
          f"ukbench N-S; {args.device}, load {os.getloadavg()[0]:.2f}",
          ["preset", "train blocks", "lr", "steps", "Easy", "Medium", "Hard", "N-S", "s"], rows)


if __name__ == "__main__":
    main()
