"""How each shipped head is trained (``benchmarks/train_shipped.py``) and how
``imret index --adapt`` adapts a head to a collection.

A recipe is a ``TrainConfig`` and a note saying why; ``imret presets NAME`` prints the
recipe stored in each shipped file.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch

from ..config import ConfigError, Preset
from ..heads import build_head
from .adapt import average_states, blend
from .bank import ViewBank
from .config import TrainConfig
from .trainer import TrainResult, data_start, state_copy, train

# Folders under the shared data root whose photos the shipped heads are trained on,
# without any label (each photo its own instance).
TRAIN_DATA = ("paris6k-sub/jpg", "ukbench/full", "fordham-places")

# Views at the size of the 'default' preset's first scale, so a head learns on maps
# shaped like the ones it is later applied to.
_BASE = TrainConfig(mode="unsupervised", views=4, max_size=512, seed=0, batch=8, negatives=4, refresh_every=50)


@dataclass(frozen=True)
class Recipe:
    """``seeds``: the recipe trains ``config`` once per seed (its views and tuples; the
    config's own seed is replaced), every run from the first run's start, and ships the
    mean of the trained heads (a model soup, as the tuned backbone ships), so that no seed
    is picked on the photos it is scored on. ``blend``: the shipped head lies this far from
    its untrained start towards that mean (weight-space interpolation, as ``--adapt``
    blends; 1 ships it whole). ``clusters_from``: the folders whose photos alone fit the
    clusters of that start (``start``)."""

    config: TrainConfig
    notes: str = ""
    blend: float = 1.0
    seeds: tuple[int, ...] = (0,)
    clusters_from: tuple[str, ...] = ()

    def __post_init__(self):
        if not 0.0 < self.blend <= 1.0:
            raise ConfigError(f"recipe blend must lie in (0, 1], got {self.blend!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or any(
                not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ConfigError(f"recipe seeds must be distinct integers >= 0, at least one; got {self.seeds!r}")
        if isinstance(self.clusters_from, str) or not all(isinstance(f, str) and f for f in self.clusters_from):
            raise ConfigError(f"recipe clusters_from must be a tuple of folder names, got {self.clusters_from!r}")

    def start(self, preset: Preset, bank: ViewBank) -> dict | None:
        """``clusters_from``: the untrained head every seed starts from, its data-dependent
        start made as the trainer makes it (NetVLAD: PCA of every training photo's features)
        but with the clusters fit on the photos under these folders only (a path holding
        ``/FOLDER/``), so that no photo of the places a head is scored on shapes its centroids.
        None (no folders named): the trainer's own start."""
        if not self.clusters_from:
            return None
        marks = [os.sep + os.path.normpath(f) + os.sep for f in self.clusters_from]
        picked = [i for i, path in enumerate(bank.paths) if any(m in path for m in marks)]
        if not picked:
            raise ValueError(f"recipe: no training photo lies under {', '.join(self.clusters_from)}")
        head = build_head(preset.head, bank.extractor.backbone.out_channels).to(bank.extractor.device)
        init = getattr(head, "init_from_features", None)
        if init is None or "cluster_maps" not in inspect.signature(init).parameters:
            raise ConfigError(f"recipe clusters_from: head {preset.head.name!r} fits no clusters")
        data_start(head, bank, self.seeds[0], picked)
        return state_copy(head.state_dict())

    def run(self, preset: Preset, bank_of: Callable[[int], ViewBank], **kw) -> list[TrainResult]:
        """Train ``preset``'s head once per seed on ``bank_of(seed)`` (that seed's training
        views); ``kw`` goes to ``imret.training.train``."""
        runs: list[TrainResult] = []
        for seed in self.seeds:
            bank = bank_of(seed)
            start = runs[0].start_state if runs else self.start(preset, bank)
            runs.append(train(preset, self.config.replace(seed=seed), None, bank=bank, start=start, **kw))
        return runs

    def shipped_state(self, runs: Sequence[TrainResult]) -> dict:
        """The head state this recipe ships from its ``runs`` (one per seed, from one start)."""
        if not runs:
            raise ValueError("recipe: no training run")
        starts = [r.start_state for r in runs]
        if (len(runs) > 1 or self.blend != 1.0) and any(s is None for s in starts):
            raise ValueError("recipe: a run was resumed, so its untrained start is unknown; train it afresh")
        if any(s.keys() != starts[0].keys() or not all(torch.equal(s[k], starts[0][k]) for k in s)
               for s in starts[1:]):
            raise ValueError("recipe: the runs start from different heads; their mean is no soup")
        trained = runs[0].head_state if len(runs) == 1 else average_states([r.head_state for r in runs])
        return trained if self.blend == 1.0 else blend(starts[0], trained, self.blend)


# The seeds a head recipe averages where it ships a soup (benchmarks/bench_blend.py --soup):
# one seed's Hard mAP is a lottery of the views it draws, and picking the best seed on
# paris6k-sub would be picking on the scored photos.
SOUP_SEEDS = (0, 1, 2)

# The training folders whose photos alone fit the NetVLAD heads' clusters: none of the
# scored collection (paris6k-sub), as none of a user's.
CLUSTERS_FROM = ("ukbench/full", "fordham-places")

# The recipe of the NetVLAD heads (lite0-icsa-netvlad takes it with its own attention rate).
_NETVLAD = Recipe(_BASE.replace(loss="triplet", steps=150, lr=1e-3, checkpoint_every=150),
                  "PCA + k-means start (clusters from " + " and ".join(CLUSTERS_FROM) + " only), then triplet",
                  seeds=SOUP_SEEDS, clusters_from=CLUSTERS_FROM)

SHIPPED_RECIPES: dict[str, Recipe] = {
    # Shipped halfway from its untrained start (the head as built, its attention at identity:
    # 58.9 Hard on paris6k-sub, below GeM's 62.1 on the same tuned backbone) to the trained
    # weights: trained whole, the head scored below that start on paris6k-sub landmarks it never
    # saw (leave-one-landmark-out folds, Hard 55.3 and 52.2 at seeds 0 and 1 against 58.9), and at
    # seed 1 on the photos it trained on too (51.5); halfway, 58.6 and 59.1 (seen: 58.4, 57.8).
    # 0.5 is --adapt's blend (WiSE-FT's midpoint), not a weight picked on these photos.
    # Seeds 0-2 averaged (as the tuned backbone): seed by seed the recipe spread 57.8-59.9 Hard
    # halfway, the soup 59.4 on the photos it trained on, 58.6 on landmarks it never saw.
    "lite0-dagf": Recipe(_BASE.replace(loss="triplet", steps=150, lr=1e-3, checkpoint_every=150),
                         "triplet on hard negatives", blend=0.5, seeds=SOUP_SEEDS),
    # Kim & Yoon train with cross-entropy over landmark classes; without labels (each photo
    # its own class, 191 classes of 4 views) cross-entropy overfits the views: measured
    # 29.1 Hard mAP on paris6k-sub against 44.6 untrained, so the label-free recipe is triplet.
    # lr 5e-4 (the --adapt rate) rather than 1e-3: at 1e-3 the regional head drifts below its
    # untrained state on Hard at each of 3 seeds (43.4 / 39.7 / 39.9), at 5e-4 less so
    # (48.1 / 42.7 / 42.0); the comparison was made on paris6k-sub, see docs/attention-heads.md.
    # Whole, seeds 0-2 averaged: single seeds spread 57.4-61.6 Hard on the photos they trained
    # on (untrained 59.8), the soup 60.8; on landmarks left out 57.9-61.6, the soup 60.5.
    "lite0-regional": Recipe(_BASE.replace(loss="triplet", steps=150, lr=5e-4, checkpoint_every=150),
                             "triplet on hard negatives (label-free: cross-entropy over photos overfits)",
                             seeds=SOUP_SEEDS),
    # Whole, seeds 0-2 averaged from seed 0's start. The clusters are fit on the photos of the
    # other datasets only (CLUSTERS_FROM): clusters fit on photos of a place cost that place's
    # photos, the same photos or others (benchmarks/bench_netvlad_start.py: on half of
    # paris6k-sub, clusters fit on either half 80.2 / 80.3 Medium, on no Paris photo 88.7),
    # and no user's places are among them. Clusters from every training photo (shipped until
    # 2026-12-07, night): the soup 87.4 / 41.2 Medium / Hard on the photos it trained on, 91.6 /
    # 49.3 on landmarks left out; see docs/attention-heads.md.
    # ICSA's weights train at 10x the rate (attention_lr): at 1e-3 they stayed within 0.98-1.04
    # and the head scored as NetVLAD with nothing in front. Soups (bench_blend.py --soup
    # --attention-lr): 96.2 / 58.3 Medium / Hard where trained (95.6 / 54.5 at one rate), 93.1 /
    # 48.3 on landmarks left out (92.8 / 48.1); at 3e-2 95.5 / 58.0 and 92.9 / 49.1. IA at 1e-2
    # lost Medium on landmarks left out (92.6 / 48.0 against 92.9 / 47.3): it keeps one rate.
    "lite0-icsa-netvlad": replace(_NETVLAD, config=_NETVLAD.config.replace(attention_lr=1e-2),
                                  notes=_NETVLAD.notes + "; ICSA's weights at 10x the rate"),
    "lite0-ia-netvlad": _NETVLAD,
    # Whole, seeds 0-2 averaged: single seeds 57.6-60.4 Hard on the photos they trained on
    # (untrained 57.2), the soup 59.3; on landmarks left out 55.8-60.8, the soup 57.4.
    "lite0-selfsim": Recipe(_BASE.replace(loss="triplet", steps=150, lr=1e-3, checkpoint_every=150),
                            "triplet on hard negatives", seeds=SOUP_SEEDS),
}

# The fine-tuned backbone of the tuned presets (imret/backbones/weights/TUNED_NAME.pt):
# EfficientNet-Lite0's last two parameter groups (its last MBConv block and the 320->1280
# head conv, ~1.0 M parameters) trained label-free with GeM on the TRAIN_DATA photos,
# at each of its seeds, then averaged into one net (a "model soup", Wortsman et al. 2022)
# rather than one seed picked: the seeds' Hard mAP spreads by ~10 points on paris6k-sub,
# and picking one there would be picking on the scored photos. lr 1e-4: the head's 1e-3
# moves pretrained convolutions too far (benchmarks/bench_finetune.py).
TUNED_NAME = "lite0-ft2-v1"
TUNED_RECIPE = Recipe(_BASE.replace(loss="triplet", steps=150, lr=1e-4, train_blocks=2, checkpoint_every=150),
                      "GeM with the last 2 groups trained, triplet on hard negatives; soup of seeds 0-2",
                      seeds=SOUP_SEEDS)


def adapt_config(preset_name: str, base: TrainConfig) -> TrainConfig:
    """``base`` (``--adapt``'s configuration) with the head's input-independent attention
    weights at the multiple of ``base.lr`` that ``preset_name``'s shipped recipe trained them
    at (ICSA: 10×), so that adapting continues the head as it was trained; ``base`` itself
    when the preset has no recipe, its recipe one rate, or ``base`` a rate of its own."""
    recipe = SHIPPED_RECIPES.get(preset_name)
    if recipe is None or recipe.config.attention_lr is None or base.attention_lr is not None:
        return base
    return base.replace(attention_lr=base.lr * recipe.config.attention_lr / recipe.config.lr)
