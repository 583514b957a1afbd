"""How far to ship a head from its untrained start: trained heads blended with it, on
landmarks they saw and on landmarks they never saw.

    python benchmarks/bench_blend.py [--rows TEXT…] [--seeds N…] [--blends W…] [--soup] [--tuned]
                                     [--attention-lr LR] [--data DIR] [--cache .cache]

For each ablation row (``ablation.ROWS``, on the backbone its shipped preset runs on, or with
``--tuned`` on ``lite0-gem-tuned``'s) and
seed, the row's shipped recipe trains the head twice, label-free (each photo its own
instance, no label read): on every training photo as the shipped heads are trained
("seen": the scored photos among them), and, for each ``paris6k-sub`` landmark L, on the
photos of the other landmarks and datasets only (``ablation.py``'s "unseen" folds: L's
photos never trained on). Each head is scored at each blend weight W, the state
``start + W·(trained − start)`` (``imret.training.adapt.blend``; W 0 is the untrained start,
1 the trained head whole) on the queries of L, as ``ablation.py --lolo`` scores them; the
figures are Medium / Hard mAP, centred, weighted over the landmarks' queries. It measures
what ``Recipe.blend`` chooses: whether training moves the head somewhere that holds on
photos of places it never saw.

With ``--soup`` the recipe runs with ``Recipe.seeds`` set to the seeds: every seed after
the first starts from the first seed's untrained head (each still draws its own views and
tuples), and rows "soup" score the mean of the seeds' trained heads (``Recipe.shipped_state``),
blended with that start: whether a soup of seeds holds where single seeds spread.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import head_maps  # noqa: E402
from ablation import ROWS, instance_labels, lolo_labels, lolo_landmarks, query_landmarks  # noqa: E402
from bench_spine import table  # noqa: E402

from imret.config import HeadConfig  # noqa: E402
from imret.evaluation.evaluate import evaluate_descriptors  # noqa: E402
from imret.heads import build_head  # noqa: E402
from imret.presets import get_preset  # noqa: E402
from imret.training.adapt import blend  # noqa: E402
from imret.training.probe import descriptors, subset  # noqa: E402
from imret.training.recipes import SHIPPED_RECIPES, TRAIN_DATA  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def weighted(figs: list[tuple[int, float, float]]) -> tuple[str, str]:
    """Medium and Hard mAP of per-landmark (queries, medium, hard), weighted by queries."""
    n = sum(f[0] for f in figs)
    return tuple(f"{sum(f[0] * f[k] for f in figs) / n:.1f}" for k in (1, 2))  # type: ignore[return-value]


def score(figs: dict, preset, ex, paris, landmarks: list[str], lm: str, blends, heads) -> None:
    """Append to ``figs[(kind, w)]`` landmark ``lm``'s (queries, Medium, Hard) for each
    ``(kind, (start, trained))`` of ``heads``, blended at each weight of ``blends``."""
    keep_q = [i for i, x in enumerate(landmarks) if x == lm]
    sub = subset(paris, keep_q)
    for kind, (start, trained) in heads:
        for w in blends:
            head = build_head(preset.head, ex.backbone.out_channels)
            head.load_state_dict(blend(start, trained, w))
            f = evaluate_descriptors(sub.dataset, *descriptors(head, sub), preset.whitening)["figures"]
            figs.setdefault((kind, w), []).append((len(keep_q), f["medium"]["mAP"], f["hard"]["mAP"]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", "--data-root", dest="data_root", default=os.path.join(REPO, "..", "shared", "data"))
    ap.add_argument("--cache", default=os.path.join(REPO, ".cache"))
    ap.add_argument("--rows", nargs="+", default=["(lite0-dagf)"], help="ablation rows (label substrings)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--blends", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--soup", action="store_true", help="seeds share the first seed's start; also score their soup")
    ap.add_argument("--tuned", action="store_true",
                    help="every row on lite0-gem-tuned's backbone (Lite0's last two stages fine-tuned)")
    ap.add_argument("--attention-lr", type=float, default=None,
                    help="the recipes' TrainConfig.attention_lr (ICSA's and IA's weights at their own rate)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = os.path.normpath(args.data_root)
    paris_dir = os.path.join(root, "paris6k-sub")
    rows = []
    print(f"load {os.getloadavg()[0]:.2f}; torch {torch.get_num_threads()} thread(s)", flush=True)
    for label, name, params, recipe_name in ROWS:
        if recipe_name is None or not any(r.lower() in label.lower() for r in args.rows):
            continue
        shipped = get_preset(recipe_name)
        preset = shipped.replace(name="blend", head=HeadConfig(name, params),
                                 **({"backbone": get_preset("lite0-gem-tuned").backbone} if args.tuned else {}))
        ex = head_maps.extractor(512, preset.backbone)
        paris = head_maps.eval_maps(ex, paris_dir, args.cache)
        landmarks = query_landmarks(paris.dataset, paris_dir)
        lms = lolo_landmarks(landmarks)
        recipe = SHIPPED_RECIPES[recipe_name]
        if args.attention_lr is not None:
            recipe = replace(recipe, config=recipe.config.replace(attention_lr=args.attention_lr))
        banks = {s: head_maps.view_bank(ex, [os.path.join(root, d) for d in TRAIN_DATA], recipe.config.views, s,
                                        args.cache) for s in args.seeds}
        labels = instance_labels(banks[args.seeds[0]].paths, root)
        folds = {"seen": lambda bank: bank}
        for lm in lms:
            keep_img, per_image = lolo_labels(labels, lm, "unseen")
            folds[lm] = lambda bank, k=keep_img, p=per_image: bank.relabel(p, k)
        # each seed on its own, or (--soup) every seed from the first seed's start
        plans = ([replace(recipe, seeds=tuple(args.seeds))] if args.soup
                 else [replace(recipe, seeds=(s,)) for s in args.seeds])
        runs: dict[str, list] = {}
        for fold, pick in folds.items():
            t = time.time()
            runs[fold] = [r for plan in plans for r in plan.run(preset, lambda s: pick(banks[s]))]
            print(f"    {fold}: {len(runs[fold])} run(s), {time.time() - t:.0f} s", flush=True)
        heads = [(seed, lambda fold, i=i: (runs[fold][i].start_state, runs[fold][i].head_state))
                 for i, seed in enumerate(args.seeds)]
        if args.soup and len(args.seeds) > 1:
            mean = replace(recipe, blend=1.0, seeds=tuple(args.seeds))
            heads.append(("soup " + "+".join(map(str, args.seeds)),
                          lambda fold: (runs[fold][0].start_state, mean.shipped_state(runs[fold]))))
        for tag, head_of in heads:
            figs: dict[tuple[str, float], list] = {}
            for lm in lms:
                score(figs, preset, ex, paris, landmarks, lm, args.blends,
                      (("seen", head_of("seen")), ("unseen", head_of(lm))))
            for w in args.blends:
                rows.append((label, tag, f"{w:g}", *weighted(figs[("seen", w)]), *weighted(figs[("unseen", w)])))
                print("  " + "  ".join(map(str, rows[-1])), flush=True)
    lr = "" if args.attention_lr is None else f", attention lr {args.attention_lr:g}"
    table(f"Heads blended with their untrained start{' (tuned backbone)' if args.tuned else ''}{lr}: paris6k-sub "
          f"Medium / Hard mAP %, centred, on each landmark's queries (weighted); seen: trained on every training "
          f"photo; unseen: the landmark's photos left out; "
          f"load {os.getloadavg()[0]:.2f}", ["head", "seed", "blend", "seen M", "seen H", "unseen M", "unseen H"], rows)


if __name__ == "__main__":
    main()
