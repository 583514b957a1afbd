"""Ablation of the attention heads: one backbone, one dataset, each head's parts
switched on one at a time.

    python benchmarks/ablation.py [--data DIR] [--steps 300] [--max-size 256] [--threads 1]

Backbone: EfficientNet-Lite0 (ImageNet weights), one scale at ``--max-size``, no
whitening, exact search. Data: ``--data`` (any layout ``imret eval`` reads), by
default the embedded photo set (real photos from scikit-image/scikit-learn, 121
Copydays-style altered queries). Heads with learnable parts are trained with
``imret train``'s unsupervised mode on the dataset's database images only (the
queries are held apart), or on the photos in ``--train-on``, ``--steps`` steps from
the same cached views; the
'untrained' column is the same head before training (NetVLAD rows: with random
clusters, before the k-means start that training makes). Figures follow the
dataset's protocol (mAP and rank-1 in %). ms/image: the whole extraction of one
query (decode, resize, backbone, head) by ``Extractor.extract``, median over
``--timing-images`` queries; head ms: the head alone on its feature map.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_spine import table  # noqa: E402

from imret.config import ExtractionConfig, HeadConfig, Preset, WhiteningConfig  # noqa: E402
from imret.evaluation.datasets import load_dataset  # noqa: E402
from imret.extractor import Extractor  # noqa: E402
from imret.heads import build_head  # noqa: E402
from imret.index.store import collect_paths  # noqa: E402
from imret.training import TrainConfig, train, training_extractor  # noqa: E402
from imret.training.bank import ViewBank  # noqa: E402
from imret.training.probe import dataset_maps, figures  # noqa: E402

DAGF_OFF = {"spatial": False, "channel": False, "scales": 1, "max_mask": False}

# (row label, head, params): each attention head with its parts added one at a time
ROWS = [
    ("GeM p=3", "gem", {"p": 3.0}),
    ("R-MAC", "rmac", {}),
    ("CroW", "crow", {}),
    ("DAGF spatial", "dagf", {**DAGF_OFF, "spatial": True}),
    ("DAGF spatial→channel", "dagf", {**DAGF_OFF, "spatial": True, "channel": True}),
    ("DAGF + scale filters", "dagf", {**DAGF_OFF, "spatial": True, "channel": True, "scales": 3}),
    ("DAGF + MAX-mask (full)", "dagf", {"spatial": True, "channel": True, "scales": 3, "max_mask": True}),
    ("DAGF channel→spatial (full)", "dagf", {"order": "channel-spatial"}),
    ("regional attention", "regional", {}),
    ("NetVLAD", "netvlad", {"attention": "none"}),
    ("IA + NetVLAD", "netvlad", {"attention": "ia"}),
    ("ICSA + NetVLAD", "netvlad", {"attention": "icsa"}),
    ("SE + NetVLAD", "netvlad", {"attention": "se"}),
    ("CBAM + NetVLAD", "netvlad", {"attention": "cbam"}),
    ("self-similarity (add)", "selfsim", {"fusion": "add"}),
    ("self-similarity (concat)", "selfsim", {"fusion": "concat"}),
]


def _learnable(head) -> bool:
    return any(p.requires_grad for p in head.parameters())


def _extraction_ms(preset: Preset, head_state, paths) -> float:
    ex = Extractor(preset, device="cpu", head_state=head_state)
    ex.extract(paths[0])  # warm-up
    times = []
    for p in paths:
        t = time.perf_counter()
        ex.extract(p)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


@torch.no_grad()
def _head_ms(head, maps) -> float:
    head.eval()
    head(maps[0])
    times = []
    for m in maps:
        t = time.perf_counter()
        head(m)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="dataset folder (default: the embedded photo set)")
    ap.add_argument("--train-on", default=None, metavar="DIR",
                    help="unlabeled photos to train on (default: the dataset's database images)")
    ap.add_argument("--steps", type=int, default=300, help="training steps of each learnable head")
    ap.add_argument("--max-size", type=int, default=256, help="longest image side, training and extraction")
    ap.add_argument("--views", type=int, default=3, help="views per training photo (the photo + augmentations)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timing-images", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--rows", nargs="+", default=None, help="only rows whose label contains one of these")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data:
        dataset = load_dataset(args.data)
    else:
        from imret.evaluation.photoset import make_photoset

        dataset = load_dataset(make_photoset(tempfile.mkdtemp(prefix="imret-ablation-")).root)
    base = Preset(name="ablation", extraction=ExtractionConfig(max_size=args.max_size, scales=(1.0,)),
                  whitening=WhiteningConfig(kind="none"))
    cfg = TrainConfig(steps=args.steps, max_size=args.max_size, views=args.views, seed=args.seed,
                      checkpoint_every=args.steps)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; "
          f"{dataset.name}: {len(dataset.db)} database images, {len(dataset.queries)} queries; "
          f"EfficientNet-Lite0 at {args.max_size} px, one scale, no whitening", flush=True)
    t = time.time()
    ex = training_extractor(base, cfg)
    # One bank of training views for every head, each photo its own instance.
    train_paths = collect_paths([args.train_on]) if args.train_on else dataset.db
    bank = ViewBank(ex, train_paths, list(range(len(train_paths))), cfg.views, cfg.seed, dtype=torch.float32)
    db_maps = None
    if not args.train_on:  # the database maps are the training views 0
        photo_maps = {bank.paths[i]: bank.maps([k])[0] for k, (i, v) in enumerate(bank.items) if v == 0}
        db_maps = [photo_maps[p] for p in dataset.db]
    maps = dataset_maps(ex, dataset, db=db_maps)
    print(f"feature maps of {len(bank)} training views and {len(dataset.queries)} queries: "
          f"{time.time() - t:.0f} s", flush=True)
    timing_paths = dataset.queries[: args.timing_images]
    rows = []
    for label, name, params in ROWS:
        if args.rows and not any(r.lower() in label.lower() for r in args.rows):
            continue
        preset = base.replace(head=HeadConfig(name, params))
        head = build_head(preset.head, ex.backbone.out_channels)
        start = figures(head, maps)
        state, seconds = None, 0.0
        if _learnable(head):
            t = time.time()
            res = train(preset, cfg, None, bank=bank)
            seconds = time.time() - t
            state = res.head_state
            head.load_state_dict(state)
        got = figures(head, maps)
        rows.append((label, f"{got['mAP']:.1f}", f"{got['R@1']:.1f}",
                     f"{start['mAP']:.1f}" if state is not None else "", f"{start['R@1']:.1f}" if state is not None else "",
                     f"{_extraction_ms(preset, state, timing_paths):.0f}", f"{_head_ms(head, maps.queries):.1f}",
                     f"{head.out_dim}", f"{seconds:.0f}" if state is not None else ""))
        print("  " + "  ".join(rows[-1]), flush=True)
    table(f"Ablation on {dataset.name} ({len(dataset.queries)} queries), EfficientNet-Lite0 @ {args.max_size} px, "
          f"trained heads: {args.steps} unsupervised steps (triplet, frozen backbone)",
          ["head", "mAP", "R@1", "mAP untrained", "R@1 untrained", "ms/image", "head ms", "dim", "train s"], rows)


if __name__ == "__main__":
    main()
