"""Backbone stages fine-tuned at several seeds and averaged into one net (a model soup).

``imret.training.train`` with ``train_blocks`` > 0 trains a head together with the
backbone's last stages; how well such a run does on Hard queries depends on the views
its seed draws (on paris6k-sub the Hard mAP of one recipe spread over 10 points across
five seeds). Averaging the weights of runs fine-tuned from one start (Wortsman et al.
2022, "model soups") gives one net that scores like their ensemble, without choosing a
seed on the photos it is then scored on. ``benchmarks/train_shipped.py`` makes the
tuned presets' backbone this way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..backbones.tuned import stages_state
from ..config import Preset
from .adapt import average_states
from .bank import ViewBank
from .config import TrainConfig
from .trainer import TrainResult, state_copy, train, training_extractor


@dataclass
class Soup:
    """``extractor``: ``preset``'s backbone at the training size with the averaged
    stages in place; ``stages``: those stages' tensors (net keys); ``head_state``: the
    averaged head; ``runs``: each seed's result."""

    extractor: object
    stages: dict[str, torch.Tensor]
    head_state: dict[str, torch.Tensor]
    runs: list[TrainResult]


def train_soup(preset: Preset, cfg: TrainConfig, paths: Sequence[str], seeds: Sequence[int], device=None,
               progress: bool = False) -> Soup:
    """Train ``preset``'s head and its backbone's last ``cfg.train_blocks`` groups on
    ``paths`` (each photo its own instance, as ``cfg.mode`` 'unsupervised'), once per
    seed in ``seeds`` (its views and steps), from the same start; average the runs."""
    if cfg.train_blocks < 1:
        raise ValueError("train_soup: cfg.train_blocks must be >= 1 (a soup of backbone stages)")
    if not seeds:
        raise ValueError("train_soup: no seed")
    runs, stages, heads = [], [], []
    ex = None
    for seed in seeds:
        run_cfg = cfg.replace(seed=int(seed))
        torch.manual_seed(run_cfg.seed)
        ex = training_extractor(preset, run_cfg, device)  # trained in place: a fresh start per seed
        # the views' entering maps are computed before any step, so from the shared start
        images = ViewBank(ex, list(paths), list(range(len(paths))), run_cfg.views, run_cfg.seed, cache=False,
                          progress=progress)
        bank = ViewBank.from_state(ex, images.cached(run_cfg.train_blocks).state())
        res = train(preset, run_cfg, None, bank=bank, progress=progress)
        runs.append(res)
        heads.append(res.head_state)
        stages.append(state_copy(stages_state(ex.backbone, cfg.train_blocks)))
    soup = average_states(stages)
    ex.backbone.net.load_state_dict({k: v.to(ex.device) for k, v in soup.items()}, strict=False)
    return Soup(ex, soup, average_states(heads) if heads[0] else {}, runs)
