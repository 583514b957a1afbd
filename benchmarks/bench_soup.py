"""A model soup of fine-tuned rows: the mean of their weights, scored beside each of them.

    python benchmarks/bench_soup.py ROW.pt … [--data ../shared/data] [--threads 1] [--out SOUP.pt]

The rows are files ``bench_finetune.py --save DIR`` wrote: one preset and number of
trained backbone stages, trained at different seeds (other views, other steps) from
the same start. For runs fine-tuned from one start, Wortsman et al. (2022, "model soups")
found the mean of their weights to score like their ensemble at the cost of one model
(the ensemble is not measured here); it also stands in for choosing a seed, which on the
shared photos would be choosing on the scored photos. Each row and the soup are scored on paris6k-sub
(Easy/Medium/Hard, centred as ``imret eval`` scores) and ukbench (N-S). ``--out`` writes
the soup in the same layout.
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

from imret.backbones.tuned import save_tuned  # noqa: E402
from imret.evaluation.datasets import load_dataset  # noqa: E402
from imret.heads import build_head  # noqa: E402
from imret.presets import get_preset  # noqa: E402
from imret.training.adapt import average_states  # noqa: E402
from imret.training.probe import dataset_maps, figures  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def soup(rows: list[dict]) -> dict:
    keys = {(r["preset"], r["train_blocks"]) for r in rows}
    if len(keys) != 1:
        raise SystemExit(f"bench_soup: the rows mix presets / train blocks {sorted(keys)}; a soup needs one")
    out = {k: rows[0][k] for k in ("preset", "train_blocks", "train_data")}
    out["seed"] = [r["seed"] for r in rows]
    out["head"] = average_states([r["head"] for r in rows])
    if "backbone" in rows[0]:
        out["backbone"] = average_states([r["backbone"] for r in rows])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows", nargs="+", help="files bench_finetune.py --save wrote")
    ap.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the soup here")
    ap.add_argument("--soup-only", action="store_true", help="score the soup alone, not each row")
    ap.add_argument("--tuned-out", default=None, metavar="FILE",
                    help="write the soup's trained backbone stages as a tuned-stages file (imret.backbones.tuned), "
                         "which BackboneConfig(tuned=FILE) and bench_adapt.py --tuned take")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [torch.load(p, map_location="cpu", weights_only=True) for p in args.rows]
    mixed = soup(rows)
    if args.out:
        torch.save(mixed, args.out)
    ex = extractor(512)
    if args.tuned_out:
        if "backbone" not in mixed:
            raise SystemExit("bench_soup: --tuned-out needs rows that trained backbone stages")
        ex.backbone.net.load_state_dict(mixed["backbone"])  # each scored row below loads its own again
        save_tuned(args.tuned_out, "efficientnet-lite0", ex.backbone, mixed["train_blocks"],
                   {"protocol": "label-free", "seeds": mixed["seed"], "head": mixed["preset"]},
                   {"folders": mixed["train_data"], "labels": "none"})
    paris = load_dataset(os.path.join(args.data, "paris6k-sub"))
    ukb = load_dataset(os.path.join(args.data, "ukbench"))
    preset = get_preset(mixed["preset"])
    named = [] if args.soup_only else [(f"seed {r['seed']}", r) for r in rows]
    table_rows = []
    for label, r in named + [(f"soup of seeds {mixed['seed']}", mixed)]:
        t = time.time()
        if "backbone" in r:
            ex.backbone.net.load_state_dict(r["backbone"])
        head = build_head(preset.head, ex.backbone.out_channels)
        head.load_state_dict(r["head"])
        head.eval()
        p = figures(head, dataset_maps(ex, paris, scales=SCALES), preset.whitening)
        u = figures(head, dataset_maps(ex, ukb, scales=SCALES), preset.whitening)
        table_rows.append((label, *(f"{p[k]['mAP']:.1f}" for k in ("easy", "medium", "hard")), f"{u['N-S']:.3f}",
                           f"{time.time() - t:.0f}"))
        print("  ".join(table_rows[-1]), flush=True)
    table(f"{mixed['preset']}, {mixed['train_blocks']} backbone stages trained on {', '.join(mixed['train_data'])}; "
          f"paris6k-sub mAP % (centred), ukbench N-S; cpu, {torch.get_num_threads()} thread(s), "
          f"load {os.getloadavg()[0]:.2f}", ["weights", "Easy", "Medium", "Hard", "N-S", "s"], table_rows)


if __name__ == "__main__":
    main()
