"""What the small-collection centring gives: each preset's descriptors scored with and
without the database mean subtracted, on every dataset under ``--data``.

    python benchmarks/bench_centring.py [--data ../shared/data] [--presets default lite0-dagf …]
                                        [--cache .cache] [--threads 1]

Below 500 images an index learns no PCA-whitening (its covariance would be noise) but,
from 10 images on, subtracts the database mean (``WhiteningConfig.learned_from``). This
scores both on the same cached backbone maps (Lite0 at 512 px, 3 scales, the shipped head
weights) through ``evaluate_descriptors``, the public evaluation path: revisited
Easy/Medium/Hard mAP for a revisitop dataset, N-S for UKBench, mAP for the others.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import head_maps  # noqa: E402
from bench_spine import table  # noqa: E402

from imret.heads import build_head  # noqa: E402
from imret.heads.trained import shipped_for  # noqa: E402
from imret.presets import get_preset  # noqa: E402
from imret.training.probe import figures  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = ("paris6k-sub", "ukbench", "fordham-places")


def headline(figs: dict) -> str:
    """The figures a dataset's protocol is known by, as one cell."""
    if "easy" in figs:
        return " / ".join(f"{figs[k]['mAP']:.1f}" for k in ("easy", "medium", "hard"))
    if "N-S" in figs:
        return f"{figs['N-S']:.3f}"
    return f"{figs['mAP']:.1f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data"))
    ap.add_argument("--presets", nargs="+", default=["default", "lite0-dagf", "lite0-regional", "lite0-selfsim",
                                                      "lite0-icsa-netvlad"])
    ap.add_argument("--cache", default=os.path.join(REPO, ".cache"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ex = head_maps.extractor(512)
    found = [d for d in DATASETS if os.path.isdir(os.path.join(args.data, d))]
    if not found:
        raise SystemExit(f"--data {args.data}: none of {', '.join(DATASETS)} is there")
    maps = {d: head_maps.eval_maps(ex, os.path.join(args.data, d), args.cache) for d in found}
    rows = []
    for name in args.presets:
        preset = get_preset(name)
        if preset.extraction.max_size != 512:
            raise SystemExit(f"--presets: {name} extracts at {preset.extraction.max_size} px; the cached maps are 512 px")
        head = build_head(preset.head, ex.backbone.out_channels)
        trained = shipped_for(preset)
        if trained is not None:
            head.load_state_dict(trained.float_state())
        for what, white in (("L2 only", preset.whitening.replace(kind="none")),
                            ("as indexed (centred: 10-499 images)", preset.whitening)):
            rows.append((name, what, *(headline(figures(head, maps[d], white)) for d in found)))
            print("  " + "  ".join(rows[-1]), flush=True)
    table(f"Centring on the database mean, Lite0 @ 512 px, 3 scales, shipped heads; "
          f"{', '.join(f'{d} {len(maps[d].dataset.db)} images' for d in found)}; load {os.getloadavg()[0]:.2f}",
          ["preset", "descriptors", *found], rows)


if __name__ == "__main__":
    main()
