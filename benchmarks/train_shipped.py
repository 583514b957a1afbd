"""Train every attentive preset's head on real photos and write the files the package ships.

    python benchmarks/train_shipped.py [--cache .cache] [--out imret/heads/weights] [--only NAME…]
                                       [--dry-run] [--threads 1]

Seeded: the same machine and thread count give the same files, the cached maps' thread
count included (maps made with two threads differ from one thread's in the last bits, and a
head trained on them landed 0.7 Hard mAP away). A recipe of several seeds
(``Recipe.seeds``) trains at each on that seed's views and ships their mean. Protocol of the
shipped heads (label-free): every photo of ``../shared/data/paris6k-sub/jpg``,
``ukbench/full`` and ``fordham-places`` is its own instance, its positives are strong
augmentations of it (``imret.training.augment``), its negatives the other photos; no
label of any dataset is read. The heads are then scored on paris6k-sub (its queries,
revisited Easy/Medium/Hard) and ukbench (N-S) as ``imret eval`` scores the 'default'
preset: EfficientNet-Lite0 at 512 px, 3 scales, whitening as the preset learns it
(none below 500 images). Backbone maps are computed once and cached
(``benchmarks/head_maps.py``); each head then trains on the cached maps in minutes.
The DELF keypoint attention of ``--local`` is trained by its own recipe (cross-entropy
over the same label-free instances, ``imret.local.train``) and shipped beside.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import head_maps  # noqa: E402
from bench_spine import table  # noqa: E402

from imret.core.paths import collect_paths  # noqa: E402
from imret.heads import build_head  # noqa: E402
from imret.heads.trained import save_trained  # noqa: E402
from imret.presets import get_preset  # noqa: E402
from imret.training import TrainConfig  # noqa: E402
from imret.training.probe import figures  # noqa: E402
from imret.training.recipes import SHIPPED_RECIPES, TRAIN_DATA, TUNED_NAME, TUNED_RECIPE  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def summary(paris: dict, ukb: dict | None) -> dict:
    out = {k: round(paris[k.lower()]["mAP"], 2) for k in ("Easy", "Medium", "Hard")}
    if ukb is not None:
        out["N-S"] = round(ukb["N-S"], 3)
    return out


def train_delf(root: str, args) -> tuple:
    """The DELF keypoint attention of ``--local`` (the 'delf' local config): cross-entropy
    over the same label-free instances, backbone frozen (``imret.local.train``)."""
    from imret.local.config import get_local_config
    from imret.local.train import AttentionTrainConfig, save_attention, shipped_attention, train_attention

    config = get_local_config("delf")
    cfg = AttentionTrainConfig(mode="unsupervised", steps=args.steps or 200, batch=16, views=4, max_size=384, seed=0)
    ex = head_maps.extractor(cfg.max_size, config.backbone)
    bank = head_maps.view_bank(ex, [os.path.join(root, d) for d in TRAIN_DATA], cfg.views, cfg.seed, args.cache)
    t = time.time()
    res = train_attention(None, config, cfg, bank=bank, progress=args.progress)
    seconds = time.time() - t
    if not args.dry_run:
        path = os.path.join(os.path.dirname(os.path.dirname(args.out)), "local", "weights", "delf-attention.pt")
        save_attention(path, res.state, config, cfg, res.losses,
                       {"photos": len(bank.paths), "folders": list(TRAIN_DATA), "labels": "none (each photo its "
                        "own instance, augmentations as positives)", "protocol": "label-free"}, half=True)
        assert shipped_attention("delf") == path
    n = 20
    acc = sum(res.accuracies[-n:]) / n
    return ("delf attention (--local)", "label-free", f"loss {sum(res.losses[:n]) / n:.2f}→{sum(res.losses[-n:]) / n:.2f}",
            f"train acc {acc:.2f}", "", "", "", f"{seconds:.0f}", sum(v.numel() for v in res.state.values()))


def train_tuned_stages(root: str, args) -> tuple:
    """The tuned presets' backbone: GeM with Lite0's last groups trained label-free on the
    TRAIN_DATA photos at each of TUNED_RECIPE.seeds, averaged (``imret.training.soup``), written
    to ``imret/backbones/weights/TUNED_NAME.pt``."""
    from imret.backbones.tuned import save_tuned
    from imret.training.soup import train_soup

    base = get_preset("default")
    cfg = TUNED_RECIPE.config.replace(steps=args.steps or TUNED_RECIPE.config.steps,
                                      checkpoint_every=args.steps or TUNED_RECIPE.config.checkpoint_every)
    paths = collect_paths([os.path.join(root, d) for d in TRAIN_DATA])
    t = time.time()
    soup = train_soup(base, cfg, paths, TUNED_RECIPE.seeds, progress=args.progress)
    seconds = time.time() - t
    if not args.dry_run:
        path = os.path.join(args.tuned_out, f"{TUNED_NAME}.pt")
        recipe = {"protocol": "label-free", "train": cfg.to_dict(), "seeds": list(TUNED_RECIPE.seeds),
                  "head": base.head.to_dict(), "seconds": round(seconds, 1), "notes": TUNED_RECIPE.notes}
        data = {"photos": len(paths), "folders": list(TRAIN_DATA), "labels": "none (each photo its own "
                "instance, augmentations as positives)"}
        save_tuned(path, base.backbone.name, soup.extractor.backbone, cfg.train_blocks, recipe, data)
        print(f"  wrote {path}", flush=True)
    params = sum(v.numel() for v in soup.stages.values() if v.is_floating_point())
    return (f"{TUNED_NAME} (backbone stages)", "label-free soup", "", "", "", "", "", f"{seconds:.0f}", params)


class Maps:
    """The cached maps (paris6k-sub, ukbench, training views per seed) of one backbone config."""

    def __init__(self, root: str, args):
        self.root, self.args, self._got = root, args, {}

    def __call__(self, backbone):
        """(extractor, paris6k-sub maps, ukbench maps, bank_of: (seed, views) -> training views)."""
        key = json.dumps(backbone.to_dict(), sort_keys=True)
        if key not in self._got:
            ex = head_maps.extractor(512, backbone)
            r, c = self.root, self.args.cache

            def bank_of(seed: int, views: int, ex=ex):
                return head_maps.view_bank(ex, [os.path.join(r, d) for d in TRAIN_DATA], views, seed, c)

            self._got[key] = (ex, head_maps.eval_maps(ex, os.path.join(r, "paris6k-sub"), c),
                              head_maps.eval_maps(ex, os.path.join(r, "ukbench"), c), bank_of)
        return self._got[key]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", "--data-root", dest="data_root", default=os.path.join(REPO, "..", "shared", "data"))
    ap.add_argument("--cache", default=os.path.join(REPO, ".cache"), help="folder of cached backbone maps")
    ap.add_argument("--out", default=os.path.join(REPO, "imret", "heads", "weights"))
    ap.add_argument("--tuned-out", default=os.path.join(REPO, "imret", "backbones", "weights"))
    ap.add_argument("--only", nargs="+", default=None,
                    help=f"only these presets ('{TUNED_NAME}': the tuned backbone stages, 'delf': --local's attention)")
    ap.add_argument("--steps", type=int, default=None, help="override every recipe's steps (experiments)")
    ap.add_argument("--dry-run", action="store_true", help="train and score, write nothing")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--progress", action="store_true", help="a progress bar per training")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = os.path.normpath(args.data_root)
    t0 = time.time()
    rows = []
    # the tuned stages first: the heads of the tuned presets are trained on their maps
    if not args.only or TUNED_NAME in args.only:
        rows.append(train_tuned_stages(root, args))
        print("  ".join(map(str, rows[-1])), flush=True)
    maps = Maps(root, args)
    maps(get_preset("default").backbone)
    photos = len(collect_paths([os.path.join(root, d) for d in TRAIN_DATA]))  # each view bank's photos
    print(f"maps ready in {time.time() - t0:.0f} s: {photos} training photos; "
          f"torch {torch.get_num_threads()} thread(s); load {os.getloadavg()[0]:.2f}", flush=True)
    for name in ("default", "lite0-gem-tuned"):  # the baselines: GeM on each backbone
        base = get_preset(name)
        ex, paris, ukb, _ = maps(base.backbone)
        gem = summary(figures(build_head(base.head, ex.backbone.out_channels), paris, base.whitening),
                      figures(build_head(base.head, ex.backbone.out_channels), ukb, base.whitening))
        rows.append((f"{name} (GeM)", "-", *gem.values(), "", "", ""))
        print("  ".join(map(str, rows[-1])), flush=True)
    for name, recipe in SHIPPED_RECIPES.items():
        if args.only and name not in args.only:
            continue
        preset = get_preset(name)
        ex, paris, ukb, bank_of = maps(preset.backbone)
        if args.steps:
            recipe = replace(recipe, config=recipe.config.replace(steps=args.steps, checkpoint_every=args.steps))
        cfg: TrainConfig = recipe.config
        head = build_head(preset.head, ex.backbone.out_channels)
        before = summary(figures(head, paris, preset.whitening), figures(head, ukb, preset.whitening))
        t = time.time()
        runs = recipe.run(preset, lambda seed: bank_of(seed, cfg.views), progress=args.progress)
        seconds = time.time() - t
        path = os.path.join(args.out, f"{name}.pt")
        data = {"photos": photos, "folders": list(TRAIN_DATA), "labels": "none (each photo its own "
                "instance, augmentations as positives)"}
        meta = {"protocol": "label-free", "train": cfg.to_dict(), "seeds": list(recipe.seeds),
                "seconds": round(seconds, 1), "notes": recipe.notes, "blend": recipe.blend}
        state = recipe.shipped_state(runs)
        if not args.dry_run:
            state = save_trained(path, preset, state, meta, data).float_state()
        head.load_state_dict(state)  # score the weights as shipped (float16-rounded)
        after = summary(figures(head, paris, preset.whitening), figures(head, ukb, preset.whitening))
        if not args.dry_run:
            save_trained(path, preset, state, meta, data, {"paris6k-sub": after, "untrained": before})
        rows.append((name, "label-free", *after.values(), before["Hard"], f"{seconds:.0f}",
                     sum(p.numel() for p in head.parameters())))
        print("  ".join(map(str, rows[-1])), flush=True)
    if not args.only or "delf" in args.only:
        rows.append(train_delf(root, args))
    table(f"Shipped heads on paris6k-sub (mAP %) and ukbench (N-S), Lite0 @ 512 px, 3 scales; load "
          f"{os.getloadavg()[0]:.2f}", ["preset", "trained", "Easy", "Medium", "Hard", "N-S", "Hard untrained",
                                       "train s", "params"], rows)


if __name__ == "__main__":
    main()
