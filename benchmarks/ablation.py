"""Ablation of the attention heads on real photos: each head's parts switched on one
at a time, untrained and trained under each honest protocol.

    python benchmarks/ablation.py [--rows TEXT…] [--steps N] [--lolo TEXT…] [--lolo-modes MODE…]
                                  [--seed S] [--tuned] [--cache .cache]

Backbone EfficientNet-Lite0, frozen: ImageNet weights, or with ``--tuned`` the fine-tuned
last stages of ``lite0-gem-tuned``; descriptors as the 'default' preset extracts them
(512 px, 3 scales averaged; whitening as the preset learns it: centred on the database mean
from 10 images on, PCA-whitened from 500; ``--no-whitening`` scores L2-normalised
descriptors only), scored by ``imret.evaluation.evaluate.evaluate_descriptors`` (the public
evaluation path). Columns: Easy/Medium/Hard mAP on ``paris6k-sub`` (revisited protocol),
N-S on ``ukbench``, extraction ms/image (whole ``Extractor.extract``
of a paris6k-sub photo: decode, 3 scales, head; median of ``--timing-images``), head
parameters.

Protocols (no head is ever trained on the labels of the photos it is scored on):
- untrained: the head as built (NetVLAD: random clusters);
- label-free: unsupervised on the photos of paris6k-sub/jpg, ukbench/full and
  fordham-places, each its own instance, augmentations as positives; no label read
  (what ``imret index --adapt`` does on a collection, and how the shipped heads are made),
  from the start the row's recipe makes (``Recipe.start``: the NetVLAD rows' clusters fit
  on the UKBench and Fordham photos only, their PCA on every training photo), as every
  fold below does on its own photos;
- LOLO (``--lolo``): labelled transfer, leave-one-landmark-out: for each paris6k-sub
  landmark L, train with instance labels on the other landmarks' photos, the UKBench
  objects and the Fordham places (L's photos unseen), score the queries of L; the
  figures are those per-landmark scores averaged over queries, beside the label-free
  head and GeM on the same queries;
- unseen: the LOLO fold's photos trained label-free, each its own instance (L's photos
  unseen, no label read): against LOLO it measures what the labels add on a landmark
  neither has seen, and it estimates a label-free head on a collection it never saw;
- LOLO + unlabelled: the same labels, and every other photo (L's, the unlabelled Paris
  ones) trained label-free, each its own instance: the photos label-free training sees,
  plus the labels of photos other than L's. Against label-free, this measures what the
  labels add.
- other labels + unlabelled: the labels of UKBench and Fordham only, every Paris photo its
  own instance: the photos label-free training sees, and labels none of which belongs to
  the scored collection (LOLO + unlabelled reads the labels of L's distractors); trained
  once, scored per landmark beside the others.
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import time
from dataclasses import replace

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import head_maps  # noqa: E402
from bench_spine import table  # noqa: E402

from imret.config import HeadConfig  # noqa: E402
from imret.extractor import Extractor  # noqa: E402
from imret.heads import build_head  # noqa: E402
from imret.heads.trained import shipped_for  # noqa: E402
from imret.presets import get_preset  # noqa: E402
from imret.training import TrainConfig, train  # noqa: E402
from imret.training.probe import descriptors, figures, subset  # noqa: E402
from imret.training.recipes import SHIPPED_RECIPES, TRAIN_DATA, Recipe  # noqa: E402
from imret.evaluation.evaluate import evaluate_descriptors  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAGF_OFF = {"spatial": False, "channel": False, "scales": 1, "max_mask": False}

# (row label, head, params, recipe of the shipped preset whose training it follows)
ROWS = [
    ("GeM p=3 (default)", "gem", {"p": 3.0}, None),
    ("R-MAC", "rmac", {}, None),
    ("CroW", "crow", {}, None),
    ("DAGF spatial", "dagf", {**DAGF_OFF, "spatial": True}, "lite0-dagf"),
    ("DAGF channel→spatial", "dagf", {**DAGF_OFF, "spatial": True, "channel": True}, "lite0-dagf"),
    ("DAGF spatial→channel", "dagf", {**DAGF_OFF, "spatial": True, "channel": True, "order": "spatial-channel"},
     "lite0-dagf"),
    ("DAGF + scale filters (lite0-dagf)", "dagf", {**DAGF_OFF, "spatial": True, "channel": True, "scales": 3}, "lite0-dagf"),
    ("DAGF + MAX-mask (full)", "dagf", {"spatial": True, "channel": True, "scales": 3, "max_mask": True},
     "lite0-dagf"),
    ("DAGF + MAX-mask, votes 0 (Do et al.: any channel's max)", "dagf",
     {"spatial": True, "channel": True, "scales": 3, "max_mask": True, "mask_votes": 0.0}, "lite0-dagf"),
    ("regional attention (lite0-regional)", "regional", {"levels": 3}, "lite0-regional"),
    ("regional + per-region PCA 256", "regional", {"levels": 3, "pca": 256}, "lite0-regional"),
    # the shipped NetVLAD heads have the paper's 64 clusters; the fronts below them, measured
    # before, 16 (each row against "NetVLAD, no attention" at its own K)
    ("NetVLAD 64, no attention", "netvlad", {"attention": "none", "clusters": 64, "dim": 128}, "lite0-icsa-netvlad"),
    ("IA + NetVLAD 64 (lite0-ia-netvlad)", "netvlad", {"attention": "ia", "clusters": 64, "dim": 128},
     "lite0-ia-netvlad"),
    ("ICSA + NetVLAD 64 (lite0-icsa-netvlad)", "netvlad", {"attention": "icsa", "clusters": 64, "dim": 128},
     "lite0-icsa-netvlad"),
    ("NetVLAD, no attention", "netvlad", {"attention": "none", "clusters": 16, "dim": 128}, "lite0-icsa-netvlad"),
    ("IA + NetVLAD", "netvlad", {"attention": "ia", "clusters": 16, "dim": 128}, "lite0-ia-netvlad"),
    ("ICSA + NetVLAD", "netvlad", {"attention": "icsa", "clusters": 16, "dim": 128}, "lite0-icsa-netvlad"),
    ("ICSA before the L2 + NetVLAD", "netvlad", {"attention": "icsa", "clusters": 16, "dim": 128,
                                               "placement": "before-l2"}, "lite0-icsa-netvlad"),
    ("ICSA + NetVLAD without the per-location L2", "netvlad", {"attention": "icsa", "clusters": 16, "dim": 128,
                                                               "placement": "no-l2"}, "lite0-icsa-netvlad"),
    ("SE + NetVLAD", "netvlad", {"attention": "se", "clusters": 16, "dim": 128}, "lite0-icsa-netvlad"),
    ("CBAM + NetVLAD", "netvlad", {"attention": "cbam", "clusters": 16, "dim": 128}, "lite0-icsa-netvlad"),
    ("self-similarity add (lite0-selfsim)", "selfsim", {"window": 5, "fusion": "add"}, "lite0-selfsim"),
    ("self-similarity concat", "selfsim", {"window": 5, "fusion": "concat"}, "lite0-selfsim"),
]


# labels.tsv values that make no leave-one-landmark-out fold: no landmark, and arc_triomphe,
# which a single photo shows (it trains unlabelled, as the photos of no landmark do)
NOT_A_FOLD = ("-", "none", "arc_triomphe")


def lolo_landmarks(landmarks: list[str]) -> list[str]:
    """The landmarks, among the queries' ``landmarks``, that a fold leaves out, sorted."""
    return sorted({lab for lab in landmarks if lab not in NOT_A_FOLD})


def instance_labels(paths: list[str], root: str) -> list[str | None]:
    """Each training photo's instance from the datasets' own files: paris6k-sub's
    labels.tsv (landmark), UKBench's groups of 4, Fordham's place folders."""
    with open(os.path.join(root, "paris6k-sub", "labels.tsv")) as f:
        paris = {r["image"]: r["instance"] for r in csv.DictReader(f, delimiter="\t")}
    out = []
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0]
        if stem in paris:
            out.append(None if paris[stem] in NOT_A_FOLD else "paris:" + paris[stem])
        elif m := re.fullmatch(r"ukbench(\d{5})", stem):
            out.append(f"ukbench:{int(m.group(1)) // 4}")
        else:
            out.append("fordham:" + os.path.basename(os.path.dirname(p)))
    return out


def query_landmarks(dataset, folder: str) -> list[str]:
    """Each query's landmark, from the scored collection's own labels.tsv."""
    with open(os.path.join(folder, "labels.tsv")) as f:
        paris = {r["image"]: r["instance"] for r in csv.DictReader(f, delimiter="\t")}
    return [paris[os.path.splitext(os.path.basename(q))[0]] for q in dataset.queries]


def summary(paris: dict, ukb: dict | None = None) -> list[str]:
    out = [f"{paris[k]['mAP']:.1f}" for k in ("easy", "medium", "hard")]
    return out + ([f"{ukb['N-S']:.3f}"] if ukb is not None else [])


def extraction_ms(preset, state, paths) -> float:
    ex = Extractor(preset, device="cpu", head_state=state)
    ex.extract(paths[0])
    times = []
    for p in paths:
        t = time.perf_counter()
        ex.extract(p)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


# each fold's mode → its columns' name in the LOLO table
LOLO_NAMES = {"unseen": "unseen", "labels": "LOLO", "labels+unlabelled": "LOLO+unlab.",
              "other-labels+unlabelled": "other labels+unlab."}
LOLO_MODES = tuple(LOLO_NAMES)


def lolo_labels(labels: list[str | None], left_out: str, mode: str) -> tuple[list[int], list[int]]:
    """A LOLO fold's training images and their instance numbers; the left-out landmark's
    labels are never read. ``mode``:
    - ``"labels"``: the labelled photos of other instances, with their labels;
    - ``"unseen"``: the same photos, each its own instance (label-free training that has not
      seen the left-out landmark: against ``"labels"`` it measures what the labels add);
    - ``"labels+unlabelled"``: those labels, and every other photo (the left-out
      landmark's, the unlabelled Paris ones) each its own instance, so the fold sees the
      photos label-free training sees and differs from it only by the labels it reads;
    - ``"other-labels+unlabelled"``: the labels of the other datasets only (UKBench objects,
      Fordham places), every Paris photo its own instance: no label of the scored collection
      is read, distractors' included, so the fold is the same for every landmark left out."""
    if mode not in LOLO_MODES:
        raise ValueError(f"lolo mode {mode!r}: expected one of {', '.join(LOLO_MODES)}")
    if mode == "other-labels+unlabelled":
        own = [lab is None or lab.startswith("paris:") for lab in labels]
    else:
        own = [lab is None or lab == "paris:" + left_out for lab in labels]
    if mode.endswith("labels+unlabelled"):
        keep = list(range(len(labels)))
        names = [f"own:{i}" if own[i] else labels[i] for i in keep]
    else:
        keep = [i for i in range(len(labels)) if not own[i]]
        names = [labels[i] if mode == "labels" else f"own:{i}" for i in keep]
    order = {n: k for k, n in enumerate(sorted(set(names)))}
    per_image = [-1] * len(labels)
    for i, n in zip(keep, names):
        per_image[i] = order[n]
    return keep, per_image


def lolo_figures(preset, cfg, bank, labels, paris, landmarks, mode: str, recipe: Recipe | None = None):
    """Per left-out landmark L: train on a fold without L's labels (``lolo_labels``), from
    ``recipe``'s start on that fold's photos (``Recipe.start``; None: the trainer's), then
    the descriptors of L's queries and of the whole database."""
    lms = lolo_landmarks(landmarks)
    db_by, q_by, trained = {}, {}, {}
    for lm in lms:
        keep_q = [i for i, lab in enumerate(landmarks) if lab == lm]
        keep_img, per_image = lolo_labels(labels, lm, mode)
        fold = (tuple(keep_img), tuple(per_image))
        if fold not in trained:  # a fold that does not depend on the landmark left out trains once
            fold_bank = bank.relabel(per_image, keep_img)
            start = recipe.start(preset, fold_bank) if recipe is not None else None
            res = train(preset, cfg, None, bank=fold_bank, start=start)
            trained[fold] = build_head(preset.head, bank.extractor.backbone.out_channels)
            trained[fold].load_state_dict(res.head_state)
        db_by[lm], q_by[lm] = descriptors(trained[fold], subset(paris, keep_q))
    return lms, db_by, q_by


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", "--data-root", dest="data_root", default=os.path.join(REPO, "..", "shared", "data"),
                    help="folder holding the training photos (paris6k-sub/jpg, ukbench/full, fordham-places) and, "
                         "unless --paris / --ukbench say otherwise, the scored collections")
    ap.add_argument("--paris", default=None, metavar="DIR",
                    help="the revisitop collection scored (default DATA/paris6k-sub; --lolo reads its labels.tsv)")
    ap.add_argument("--ukbench", default=None, metavar="DIR", help="the UKBench collection scored (default DATA/ukbench)")
    ap.add_argument("--cache", default=os.path.join(REPO, ".cache"))
    ap.add_argument("--rows", nargs="+", default=None, help="only rows whose label contains one of these")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the shipped recipe's)")
    ap.add_argument("--lolo", nargs="+", default=[], help="rows (label substrings) also trained leave-one-landmark-out")
    ap.add_argument("--lolo-modes", nargs="+", default=list(LOLO_MODES), choices=LOLO_MODES,
                    help="which LOLO folds to train (default: all)")
    ap.add_argument("--seed", type=int, default=0,
                    help="the recipes' seed and their training views' (default 0, the shipped files')")
    ap.add_argument("--timing-images", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-whitening", action="store_true",
                    help="score on L2-normalised descriptors only (the tables measured before centring)")
    ap.add_argument("--tuned", action="store_true",
                    help="every row on the tuned backbone of 'lite0-gem-tuned' (Lite0's last two stages fine-tuned, "
                         "imret/backbones/weights) instead of the ImageNet one")
    ap.add_argument("--shipped", action="store_true",
                    help="also score each attentive preset's shipped weights (imret/heads/weights) as shipped")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = os.path.normpath(args.data_root)
    base = get_preset("lite0-gem-tuned" if args.tuned else "default")
    ex = head_maps.extractor(512, base.backbone)
    paris_dir = args.paris or os.path.join(root, "paris6k-sub")
    paris = head_maps.eval_maps(ex, paris_dir, args.cache)
    ukb = head_maps.eval_maps(ex, args.ukbench or os.path.join(root, "ukbench"), args.cache)
    bank = head_maps.view_bank(ex, [os.path.join(root, d) for d in TRAIN_DATA], 4, args.seed, args.cache)
    if args.lolo:  # labels are read only by the folds that use them
        labels = instance_labels(bank.paths, root)
        landmarks = query_landmarks(paris.dataset, paris_dir)
    timing = paris.dataset.db[: args.timing_images]
    white = base.whitening.replace(kind="none") if args.no_whitening else base.whitening
    print(f"{len(bank)} training views of {len(bank.paths)} photos; load {os.getloadavg()[0]:.2f}; "
          f"torch {torch.get_num_threads()} thread(s)", flush=True)
    rows, lolo_rows = [], []
    gem_head = build_head(base.head, ex.backbone.out_channels)
    for label, name, params, recipe in ROWS:
        if args.rows and not any(r.lower() in label.lower() for r in args.rows):
            continue
        preset = base.replace(name="ablation", head=HeadConfig(name, params))
        head = build_head(preset.head, ex.backbone.out_channels)
        n_params = sum(p.numel() for p in head.parameters() if p.requires_grad)
        untrained = summary(figures(head, paris, white), figures(head, ukb, white))
        ms = extraction_ms(preset, None, timing)
        if recipe is None:
            rows.append((label, "-", *untrained, f"{ms:.0f}", n_params, ""))
            print("  " + "  ".join(map(str, rows[-1])), flush=True)
            continue
        rows.append((label, "untrained", *untrained, f"{ms:.0f}", n_params, ""))
        print("  " + "  ".join(map(str, rows[-1])), flush=True)
        plan = replace(SHIPPED_RECIPES[recipe], seeds=(args.seed,))
        cfg: TrainConfig = plan.config.replace(seed=args.seed)
        if args.steps:
            cfg = cfg.replace(steps=args.steps, checkpoint_every=args.steps)
        t = time.time()
        res = train(preset, cfg, None, bank=bank, start=plan.start(preset, bank))
        seconds = time.time() - t
        head.load_state_dict(res.head_state)
        rows.append((label, "label-free", *summary(figures(head, paris, white), figures(head, ukb, white)),
                     f"{ms:.0f}", n_params, f"{seconds:.0f}"))
        print("  " + "  ".join(map(str, rows[-1])), flush=True)
        if any(r.lower() in label.lower() for r in args.lolo):
            free_db, free_q = descriptors(head, paris)
            gem_db, gem_q = descriptors(gem_head, paris)
            folds = [lolo_figures(preset, cfg, bank, labels, paris, landmarks, mode, plan)
                     for mode in args.lolo_modes]
            for lm in folds[0][0]:
                keep = [i for i, lab in enumerate(landmarks) if lab == lm]
                sub = subset(paris, keep).dataset

                def fig(db, q):
                    return summary(evaluate_descriptors(sub, db, q, white)["figures"])[1:]

                lolo_rows.append((label, lm, len(keep), *fig(gem_db, gem_q[keep]), *fig(free_db, free_q[keep]),
                                  *(x for _, db_by, q_by in folds for x in fig(db_by[lm], q_by[lm]))))
                print("  " + "  ".join(map(str, lolo_rows[-1])), flush=True)
            mine = [r for r in lolo_rows if r[0] == label]
            n = sum(r[2] for r in mine)
            columns = range(3, len(mine[0]))
            lolo_rows.append((label, "all (mean weighted by queries)", n,
                              *(f"{sum(float(r[k]) * r[2] for r in mine) / n:.1f}" for k in columns)))
            print("  " + "  ".join(map(str, lolo_rows[-1])), flush=True)
    if args.shipped:
        for name in SHIPPED_RECIPES:
            preset = get_preset(name)
            th = shipped_for(preset)
            if th is None or preset.backbone != base.backbone:  # scored on this run's backbone maps only
                continue
            head = build_head(preset.head, ex.backbone.out_channels)
            head.load_state_dict(th.float_state())
            rows.append((f"{name} as shipped", "label-free (file)",
                         *summary(figures(head, paris, white), figures(head, ukb, white)),
                         "", sum(p.numel() for p in head.parameters() if p.requires_grad), ""))
            print("  " + "  ".join(map(str, rows[-1])), flush=True)
    steps = f"{args.steps} steps" if args.steps else "the shipped recipes' steps"
    table(f"Ablation: paris6k-sub mAP % (Easy/Medium/Hard), ukbench N-S; Lite0 @ 512 px, 3 scales; "
          f"{head_maps.whitening_words(white, len(paris.dataset.db))}; trained on "
          f"cached maps, {steps}, seed {args.seed}, backbone frozen ({'tuned stages' if args.tuned else 'ImageNet'}); "
          f"load {os.getloadavg()[0]:.2f}",
          ["head", "protocol", "Easy", "Medium", "Hard", "N-S", "ms/image", "params", "train s"], rows)
    if lolo_rows:
        table("Leave-one-landmark-out: Medium / Hard mAP % on the left-out landmark's queries",
              ["head", "left out", "queries", "GeM M", "GeM H", "label-free M", "label-free H",
               *(f"{LOLO_NAMES[m]} {x}" for m in args.lolo_modes for x in "MH")], lolo_rows)


if __name__ == "__main__":
    main()
