"""NetVLAD's untrained start (PCA reduction + k-means clusters) fit with or without the
photos it is scored on.

    python benchmarks/bench_netvlad_start.py [--preset lite0-icsa-netvlad] [--seed S] [--data DIR] [--cache .cache]

The shipped NetVLAD heads start from the PCA and k-means of the local descriptors of every
training photo, ``paris6k-sub``'s among them, and score lower on ``paris6k-sub``'s
landmarks than on landmarks their training left out (``bench_blend.py``'s "seen" and
"unseen" columns). Here no step is trained: for each ``paris6k-sub`` landmark L, the head is
started (``init_from_features``, the trainer's start) from the photos of ``ablation.py``'s
folds, all training photos ("all"), all but L's ("fold") or those of the other datasets
only ("no Paris photo"), PCA and clusters each from any, and scored on L's queries (Medium / Hard mAP, centred, weighted over the landmarks'
queries, as ``bench_blend.py`` scores). It tells which of the two fits costs the photos they
saw, and how much: the clusters, when a photo's residuals to centroids fit on its own
features cancel.

A second table asks whether the cost is the photos' or their places': ``paris6k-sub`` is
split by position into two halves (``bench_adapt_split.py``'s), each in turn the collection
(database and the queries whose photos it holds; ground truth cut to it), and the clusters
are fit, beside the other datasets' photos, on that half, on the other half (the same places,
other photos), or on no Paris photo; the PCA on every training photo.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import head_maps  # noqa: E402
from ablation import instance_labels, lolo_labels, lolo_landmarks, query_landmarks  # noqa: E402
from bench_adapt_split import half_maps, position_halves  # noqa: E402
from bench_blend import weighted  # noqa: E402
from bench_spine import table  # noqa: E402

from imret.evaluation.evaluate import evaluate_descriptors  # noqa: E402
from imret.heads import build_head  # noqa: E402
from imret.presets import get_preset  # noqa: E402
from imret.training.probe import descriptors, subset  # noqa: E402
from imret.training.recipes import SHIPPED_RECIPES, TRAIN_DATA  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STARTS = (("random (as built)", None, None), ("PCA all, clusters all", "all", "all"),
          ("PCA fold, clusters fold", "fold", "fold"), ("PCA all, clusters fold", "all", "fold"),
          ("PCA fold, clusters all", "fold", "all"), ("PCA all, clusters no Paris photo", "all", "other"),
          ("PCA and clusters no Paris photo", "other", "other"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", "--data-root", dest="data_root", default=os.path.join(REPO, "..", "shared", "data"))
    ap.add_argument("--cache", default=os.path.join(REPO, ".cache"))
    ap.add_argument("--preset", default="lite0-icsa-netvlad")
    ap.add_argument("--seed", type=int, default=0, help="the views' and k-means' seed")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = os.path.normpath(args.data_root)
    paris_dir = os.path.join(root, "paris6k-sub")
    preset = get_preset(args.preset)
    if preset.head.name != "netvlad":
        raise SystemExit(f"--preset: {args.preset} has a {preset.head.name} head, not netvlad")
    print(f"load {os.getloadavg()[0]:.2f}; torch {torch.get_num_threads()} thread(s)", flush=True)
    ex = head_maps.extractor(512, preset.backbone)
    paris = head_maps.eval_maps(ex, paris_dir, args.cache)
    landmarks = query_landmarks(paris.dataset, paris_dir)
    bank = head_maps.view_bank(ex, [os.path.join(root, d) for d in TRAIN_DATA],
                               SHIPPED_RECIPES[args.preset].config.views, args.seed, args.cache)
    labels = instance_labels(bank.paths, root)
    photo_maps = bank.maps(bank.photo_items())  # view 0 of each photo, as the trainer starts
    others = [m for m, p in zip(photo_maps, bank.paths) if not p.startswith(paris_dir + os.sep)]
    figs: dict[str, list] = {}
    for lm in lolo_landmarks(landmarks):
        keep_img, _ = lolo_labels(labels, lm, "unseen")
        maps_of = {"all": photo_maps, "fold": [photo_maps[i] for i in keep_img], "other": others}
        sub = subset(paris, [i for i, x in enumerate(landmarks) if x == lm])
        for name, pca, clusters in STARTS:
            head = build_head(preset.head, ex.backbone.out_channels)
            if pca is not None:
                head.init_from_features(maps_of[pca], seed=args.seed, cluster_maps=maps_of[clusters])
            f = evaluate_descriptors(sub.dataset, *descriptors(head, sub), preset.whitening)["figures"]
            figs.setdefault(name, []).append((len(sub.dataset.queries), f["medium"]["mAP"], f["hard"]["mAP"]))
            print(f"  {lm}: {name}: {f['medium']['mAP']:.1f} / {f['hard']['mAP']:.1f}", flush=True)
    table(f"{args.preset}'s untrained start, no step trained: paris6k-sub Medium / Hard mAP %, centred, on each "
          f"landmark's queries (weighted); all: fit on every training photo; fold: the landmark's photos left out; "
          f"seed {args.seed}; load {os.getloadavg()[0]:.2f}",
          ["start", "Medium", "Hard"], [(name, *weighted(figs[name])) for name, _, _ in STARTS])

    halves = position_halves(len(paris.dataset.db))
    in_bank = {os.path.realpath(p): i for i, p in enumerate(bank.paths)}
    half_photos = [[photo_maps[in_bank[os.path.realpath(paris.dataset.db[i])]] for i in h] for h in halves]
    rows = []
    for k, half in enumerate(halves):
        own = half_maps(paris, half, set(half), f"half-{k}")
        for name, clusters in (("this half", others + half_photos[k]), ("the other half", others + half_photos[1 - k]),
                               ("no Paris photo", others)):
            head = build_head(preset.head, ex.backbone.out_channels)
            head.init_from_features(photo_maps, seed=args.seed, cluster_maps=clusters)
            f = evaluate_descriptors(own.dataset, *descriptors(head, own), preset.whitening)["figures"]
            rows.append((k, name, len(own.dataset.queries), f"{f['medium']['mAP']:.1f}", f"{f['hard']['mAP']:.1f}"))
            print("  " + "  ".join(map(str, rows[-1])), flush=True)
    table(f"{args.preset}'s untrained start on half of paris6k-sub (the collection: database and its own "
          f"queries), clusters fit beside the other datasets' photos on: Medium / Hard mAP %, centred; PCA on every "
          f"training photo; seed {args.seed}; load {os.getloadavg()[0]:.2f}",
          ["half", "clusters also fit on", "queries", "Medium", "Hard"], rows)


if __name__ == "__main__":
    main()
