"""What ``imret index DIR --adapt`` gains on a collection its head never saw.

    python benchmarks/bench_adapt.py [--presets NAME…] [--seeds N…] [--data-root DIR] [--cache .cache]
                                     [--mine] [--attention-lr LR]

The shipped heads were trained (label-free) on the photos of ``paris6k-sub`` among
others, so adapting them to ``paris6k-sub`` measures nothing new. Here each preset's
shipped recipe first trains a base head on the other training photos only
(``ukbench/full``, ``fordham-places``: 66 photos, no Paris photo; blended with its untrained
start where the recipe ships it so), the head a user whose photos are unlike the training
photos gets; then ``ADAPT``, the configuration of
``--adapt`` (its views, steps, learning rate and seed, on views at the preset's size),
trains it on the ``paris6k-sub`` photos without a label; the head ``--adapt`` returns
(``ADAPT_BLEND`` of the way from the base head to the adapted weights) and the adapted head
whole (``--adapt-blend 1``) are scored beside the base head on ``paris6k-sub``
(Easy/Medium/Hard mAP, the public evaluation path). The shipped head and the shipped head
adapted are printed beside them for reference. Maps are cached as
``ablation.py`` caches them; the train seconds are those of training on cached maps (the
whole command, backbone included, is timed in the README). ``--seeds`` repeats the base
and adapted rows at other seeds (the recipe's and ``ADAPT``'s seed, and so their views),
to tell a gain from the run-to-run spread.

A preset on the tuned backbone (``lite0-dagf``, ``lite0-regional``) is run on the backbone
its preset names; the shipped tuned stages were trained on the Paris photos too (label-free),
so only its head is new to them. ``--tuned FILE`` puts stages trained without them in their
place (``bench_finetune.py --rows 6 --train-data ukbench/full fordham-places --save DIR``, then
``bench_soup.py DIR/*.pt --tuned-out FILE``): the whole model then never saw a Paris photo.

``--rerank own`` (or steps, as ``--rerank`` takes them) also scores every row after that
re-ranking (``own``: each preset's bundled steps), and adds a row of GeM on the same
backbone, which needs no training: so a head and its paper's re-ranking are compared with
the plain pooling under the same re-ranking, on photos no part of the model saw.

``--mine`` adds the rows of training with mined positives (``TrainConfig.mine``: photos
that geometric verification of their local features links count as one instance; no label
is read): ``--adapt`` with them from the base head, and the base recipe trained with them on
the other photos, adapted with them too. ``--adapt`` itself mines since 2026-12-07, so its
plain rows are the adaptation as it was (augmentations only). The local features are cached.
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
from ablation import summary  # noqa: E402
from bench_spine import table  # noqa: E402

from imret.heads import build_head  # noqa: E402
from imret.heads.trained import shipped_for  # noqa: E402
from imret.presets import get_preset  # noqa: E402
from imret.training import train  # noqa: E402
from imret.training.adapt import ADAPT, ADAPT_BLEND, average_states, blend  # noqa: E402
from imret.training.mine import MineConfig  # noqa: E402
from imret.training.probe import figures  # noqa: E402
from imret.training.recipes import SHIPPED_RECIPES, TRAIN_DATA, adapt_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTION = "paris6k-sub"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["lite0-dagf"], choices=sorted(SHIPPED_RECIPES))
    ap.add_argument("--data", "--data-root", dest="data_root", default=os.path.join(REPO, "..", "shared", "data"))
    ap.add_argument("--cache", default=os.path.join(REPO, ".cache"))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0],
                    help="seeds of the base and adapted runs (default 0, the shipped recipes' seed)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-whitening", action="store_true", help="score on L2-normalised descriptors only")
    ap.add_argument("--tuned", default=None, metavar="FILE",
                    help="tuned backbone stages in place of those of the presets that have them")
    ap.add_argument("--soup", type=int, default=1, metavar="N",
                    help="also adapt each base head at N seeds (seed, seed+1000, …: their own views and steps), "
                         "average the N adapted heads (a model soup) and score that soup blended as --adapt blends")
    ap.add_argument("--rerank", default=None, metavar="own|STEPS",
                    help="also score every row after these re-ranking steps ('own': each preset's bundled ones), "
                         "beside a row of GeM on the same backbone")
    ap.add_argument("--attention-lr", type=float, default=None,
                    help="ADAPT's TrainConfig.attention_lr (ICSA's and IA's weights at their own rate; "
                         "default: as --adapt, the recipe's multiple of lr)")
    ap.add_argument("--mine", action="store_true",
                    help="also train with mined positives (photos that geometric verification links count as one "
                         "instance, TrainConfig.mine): the base recipe on the other photos, and --adapt")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = os.path.normpath(args.data_root)
    others = [os.path.join(root, d) for d in TRAIN_DATA if not d.startswith(COLLECTION)]
    collection = [os.path.join(root, COLLECTION, "jpg")]
    print(f"base: {len(others)} folders of {', '.join(TRAIN_DATA[1:])}; load {os.getloadavg()[0]:.2f}; "
          f"torch {torch.get_num_threads()} thread(s)", flush=True)
    rows = []
    white = get_preset("default").whitening  # every shipped preset's
    if args.no_whitening:
        white = white.replace(kind="none")

    def row(name, seed, what, state, seconds="", head_cfg=None):
        head = build_head(head_cfg or preset.head, ex.backbone.out_channels)
        if state is not None:
            head.load_state_dict(state)
        plain = summary(figures(head, paris, white))
        reranked = [] if rerank is None else summary(figures(head, paris, white, rerank)) if rerank else plain
        rows.append((name, seed, what, *plain, *reranked, seconds))
        print("  " + "  ".join(map(str, rows[-1])), flush=True)

    for name in args.presets:
        preset = head_maps.with_tuned(get_preset(name), args.tuned)
        ex = head_maps.extractor(512, preset.backbone)
        paris = head_maps.eval_maps(ex, os.path.join(root, COLLECTION), args.cache)
        if preset.extraction.max_size != 512:
            raise SystemExit(f"--presets: {name} extracts at {preset.extraction.max_size} px; the cached maps are 512 px")
        shipped = shipped_for(preset)  # None when --tuned replaced the stages it was trained on
        rerank = preset.rerank if args.rerank == "own" else args.rerank
        if rerank is not None:
            gem = get_preset("lite0-gem-tuned" if preset.backbone.tuned else "default").head
            row(name, "", f"GeM on the same backbone (no training; re-ranked: {rerank or 'none'})", None,
                head_cfg=gem)
        shipped_state = None if shipped is None else shipped.float_state()
        for seed in args.seeds:
            # the shipped recipe at this one seed (train_shipped.py ships the soup of its seeds)
            one = replace(SHIPPED_RECIPES[name], seeds=(seed,))
            base_bank = head_maps.view_bank(ex, others, one.config.views, seed, args.cache)
            cfg = adapt_config(name, ADAPT.replace(max_size=preset.extraction.max_size, seed=seed, mine=False,
                                                   attention_lr=args.attention_lr))
            adapt_bank = head_maps.view_bank(ex, collection, cfg.views, seed, args.cache)
            t = time.time()
            base = one.shipped_state(one.run(preset, lambda _: base_bank))
            row(name, seed, "recipe on the 66 other photos (not adapted)", base, f"{time.time() - t:.0f}")
            t = time.time()
            adapted = train(preset, cfg, None, bank=adapt_bank, start=base).head_state
            row(name, seed, "  + --adapt on paris6k-sub", blend(base, adapted, ADAPT_BLEND),
                f"{time.time() - t:.0f}")
            row(name, seed, "  + --adapt --adapt-blend 1 (adapted whole)", adapted)
            if args.mine:
                others_local = head_maps.local_features(base_bank.paths, MineConfig(), args.cache)
                paris_local = head_maps.local_features(adapt_bank.paths, MineConfig(), args.cache)
                t = time.time()
                adapted = train(preset, cfg.replace(mine=True), None, bank=adapt_bank, start=base,
                                local_features=paris_local).head_state
                row(name, seed, "  + --adapt with mined positives", blend(base, adapted, ADAPT_BLEND),
                    f"{time.time() - t:.0f}")
                row(name, seed, "  + --adapt with mined positives, blend 1", adapted)
                t = time.time()
                one_mined = replace(one, config=one.config.replace(mine=True))
                mined = one_mined.shipped_state(one_mined.run(preset, lambda _: base_bank, local_features=others_local))
                row(name, seed, "recipe with mined positives on the 66 other photos", mined, f"{time.time() - t:.0f}")
                adapted = train(preset, cfg.replace(mine=True), None, bank=adapt_bank, start=mined,
                                local_features=paris_local).head_state
                row(name, seed, "  + --adapt with mined positives", blend(mined, adapted, ADAPT_BLEND))
                row(name, seed, "  + --adapt with mined positives, blend 1", adapted)
            if args.soup > 1:
                runs, t = [adapted], time.time()
                for k in range(1, args.soup):
                    more = cfg.replace(seed=seed + 1000 * k)
                    bank_k = head_maps.view_bank(ex, collection, more.views, more.seed, args.cache)
                    runs.append(train(preset, more, None, bank=bank_k, start=base).head_state)
                soup = average_states(runs)
                row(name, seed, f"  + --adapt, soup of {args.soup} seeds", blend(base, soup, ADAPT_BLEND),
                    f"{time.time() - t:.0f}")
                row(name, seed, f"  + --adapt, soup of {args.soup} seeds, blend 1", soup)
            if shipped is not None and seed == 0:
                row(name, "", "shipped (saw these photos, label-free)", shipped_state)
                t = time.time()
                again = train(preset, cfg, None, bank=adapt_bank, start=shipped_state).head_state
                row(name, seed, "  shipped + --adapt on paris6k-sub", blend(shipped_state, again, ADAPT_BLEND),
                    f"{time.time() - t:.0f}")
                row(name, seed, "  shipped + --adapt --adapt-blend 1", again)
    table(f"--adapt on a collection the base head never saw: paris6k-sub mAP % (Easy/Medium/Hard); Lite0 @ 512 px, "
          f"3 scales, {head_maps.whitening_words(white, len(paris.dataset.db))}; ADAPT: {ADAPT.steps} steps, "
          f"{ADAPT.views} views, lr {ADAPT.lr:g}, attention lr {args.attention_lr or 'as --adapt'}, "
          f"blend {ADAPT_BLEND:g}; load {os.getloadavg()[0]:.2f}",
          ["preset", "seed", "head", "Easy", "Medium", "Hard"]
          + (["E re-ranked", "M re-ranked", "H re-ranked"] if args.rerank is not None else []) + ["train s"], rows)


if __name__ == "__main__":
    main()
