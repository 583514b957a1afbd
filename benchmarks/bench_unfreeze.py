"""What a training step costs with the backbone's last stages unfrozen: view images
through the whole backbone each step, against the maps entering the trained stages
cached once (what ``imret train --train-blocks N`` does).

    python benchmarks/bench_unfreeze.py [--data ../shared/data/paris6k-sub/jpg] [--photos 24]
                                        [--blocks 1 2 3] [--threads 1]

One "step" here is the backbone part of a training step: the maps of 48 views (8 tuples of
anchor, positive and 4 negatives, as the shipped recipes draw them) at 512 px, a GeM
descriptor of each, and the backward pass into the trained stages; the median of 3 steps
after one warm-up. "cache s": making the bank's stored views (decoding and augmenting
included), "MB": what it stores.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_spine import table  # noqa: E402
from head_maps import extractor  # noqa: E402

from imret.config import HeadConfig  # noqa: E402
from imret.core.paths import collect_paths  # noqa: E402
from imret.heads import build_head  # noqa: E402
from imret.training.bank import ViewBank, describe  # noqa: E402
from imret.training.unfreeze import unfreeze_last  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def step_seconds(bank: ViewBank, blocks: int, head, steps: int = 3) -> float:
    unfreeze_last(bank.extractor.backbone, blocks)
    rng = np.random.default_rng(0)
    times = []
    for s in range(steps + 1):
        ks = rng.choice(len(bank), size=48, replace=True).tolist()
        t = time.perf_counter()
        describe(head, bank.maps(ks)).sum().backward()
        times.append(time.perf_counter() - t)
    unfreeze_last(bank.extractor.backbone, 0)
    return statistics.median(times[1:])


def stored_mb(bank: ViewBank) -> float:
    return sum(t.numel() * t.element_size() for t in bank.state()["store"]) / 2 ** 20


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data", "paris6k-sub", "jpg"))
    ap.add_argument("--photos", type=int, default=24)
    ap.add_argument("--blocks", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    paths = collect_paths([args.data])[: args.photos]
    ex = extractor(512)
    head = build_head(HeadConfig("gem", {"learn_p": True}), ex.backbone.out_channels)
    t = time.perf_counter()
    images = ViewBank(ex, paths, list(range(len(paths))), 4, 0, cache=False)
    rows = [("view images, whole backbone", "-", f"{time.perf_counter() - t:.1f}", f"{stored_mb(images):.0f}",
             *(f"{step_seconds(images, b, head):.2f}" for b in args.blocks))]
    for b in args.blocks:
        t = time.perf_counter()
        cached = ViewBank(ex, paths, list(range(len(paths))), 4, 0, train_blocks=b)
        made = time.perf_counter() - t
        rows.append((f"maps entering the last {b} cached", b, f"{made:.1f}", f"{stored_mb(cached):.0f}",
                     *(f"{step_seconds(cached, b, head):.2f}" if c == b else "" for c in args.blocks)))
    table(f"Backbone part of a training step (48 views, 512 px, Lite0), s; {len(paths)} photos x 4 views; "
          f"torch {torch.get_num_threads()} thread(s); load {load:.2f} before, {os.getloadavg()[0]:.2f} after",
          ["bank", "train blocks", "cache s", "MB", *(f"step s, {b} blocks" for b in args.blocks)], rows)


if __name__ == "__main__":
    main()
