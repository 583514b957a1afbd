"""Label-free adaptation of a head to the collection being indexed (``imret index --adapt``).

The collection's photos are the training set. A photo's positives are strong
augmentations of it and the photos of the collection its local features verify
against (``imret.training.mine``: the same building seen from elsewhere, which no
augmentation shows); its negatives the other photos. No label is read, so the figures
of the collection's own queries stay honest. Training starts from the head the preset
ships trained (or its untrained start) and runs ``ADAPT`` (a few minutes on 2 CPU cores
for ~100 photos); the head it returns lies ``blend`` of the way from that start to the
adapted weights.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Mapping, Sequence

import torch

from ..config import Preset
from ..errors import ImretError
from ..core.paths import collect_paths
from .bank import ViewBank
from .config import TrainConfig
from .trainer import TrainResult, train, training_extractor

# 3 views per photo (the cost of the backbone is paid once per view), made at the preset's
# own scale-1 size (``adapt`` sets it), as the shipped heads were trained: a head learns
# on maps shaped like the ones it is later applied to. Mined positives: with augmentations
# alone --adapt lowered lite0-regional's Hard mAP on photos it never saw; with the photos
# verification links it raised Hard and Medium for every head at every seed measured
# (benchmarks/bench_adapt.py --mine; docs/attention-heads.md). A head whose recipe trains its
# input-independent attention at its own rate (ICSA) adapts at the same multiple of lr
# (``imret.training.recipes.adapt_config``, applied by ``imret index --adapt``).
ADAPT = TrainConfig(mode="unsupervised", loss="triplet", steps=150, batch=8, negatives=4, views=3,
                    refresh_every=50, lr=5e-4, seed=0, checkpoint_every=150, mine=True)

# How far the returned head lies from the start towards the adapted weights (weight-space
# interpolation, as WiSE-FT, Wortsman et al. 2022, does for fine-tuned models). 150 steps on
# one small collection land somewhere different at every seed; on paris6k-sub (3 heads x 3
# seeds, benchmarks/bench_adapt.py) the midpoint kept most of the Hard gain and lost Medium in
# 1 of 9 runs (-0.2) where the adapted head whole lost it in 3 (down to -1.1). 0.5 is
# WiSE-FT's midpoint, fixed before measuring it; the --adapt tables (docs/attention-heads.md) give both.
# With mined positives the whole head scored higher on the collection's own queries at every
# run, but lowered new queries' Medium once (regional, -0.5): the midpoint stays until the
# held-out photos say otherwise.
ADAPT_BLEND = 0.5


def _same_layout(states: Sequence[Mapping[str, torch.Tensor]], who: str) -> None:
    """The states hold the same keys with the same shapes (states of one model)."""
    first = states[0]
    for other in states[1:]:
        if set(first) != set(other):
            raise ValueError(f"{who}: the states differ in their keys: {sorted(set(first) ^ set(other))}")
        for k, b in other.items():
            if first[k].shape != b.shape:
                raise ValueError(f"{who}: {k} is {tuple(first[k].shape)} in one state and {tuple(b.shape)} in another")


def blend(start: Mapping[str, torch.Tensor], adapted: Mapping[str, torch.Tensor],
          weight: float) -> dict[str, torch.Tensor]:
    """``start + weight·(adapted − start)`` for every floating-point tensor of two states of
    one head; other tensors (counters, flags) are taken from ``adapted``."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"blend weight must lie in [0, 1], got {weight}")
    _same_layout([start, adapted], "blend")
    out = {}
    for k, b in adapted.items():
        if b.is_floating_point():
            a = start[k].to(b.dtype)
            out[k] = a + weight * (b - a)
        else:
            out[k] = b
    return out


def average_states(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The key-by-key mean of several states of one model (a "model soup", Wortsman et al.
    2022: runs fine-tuned from one start average into one model that scores like their
    ensemble), in the first state's dtypes; other tensors (BN's batch counters) from the first."""
    if not states:
        raise ValueError("average_states: no state to average")
    _same_layout(list(states), "average_states")
    return {k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v
            for k, v in states[0].items()}


def adapt(preset: Preset, sources: Sequence[str], cfg: TrainConfig = ADAPT, device=None, progress: bool = False,
          on_error: Callable[[str, str], None] | None = None, start: dict | None = None,
          blend_weight: float = ADAPT_BLEND) -> TrainResult:
    """Train ``preset``'s head on the photos under ``sources`` without labels, on views at
    the preset's scale-1 size. ``start``: the head state to start from (default: the
    shipped trained head, if any). The result lies ``blend_weight`` of the way from
    ``start`` to the adapted weights (1: the adapted head whole); a head with no trained
    start (its data-dependent init) is returned whole."""
    from ..heads.common import AttentionHead
    from ..heads import HEADS

    if not issubclass(HEADS.get(preset.head.name), AttentionHead):
        raise ImretError(f"--adapt: preset {preset.name!r} has no learnable head (head {preset.head.name!r}); "
                         "pick an attentive preset, e.g. lite0-dagf")
    if not 0.0 < blend_weight <= 1.0:
        raise ImretError(f"--adapt-blend: expected a weight in (0, 1] (1 keeps the adapted head whole), "
                         f"got {blend_weight}")
    paths = collect_paths(list(sources))
    if len(paths) < 2:
        raise ImretError(f"--adapt needs at least two photos to contrast, found {len(paths)} in {', '.join(sources)}")
    cfg = cfg.replace(max_size=preset.extraction.max_size)
    ex = training_extractor(preset, cfg, device)
    if start is None and ex.trained is not None:
        start = ex.trained.float_state()
    bank = ViewBank(ex, paths, list(range(len(paths))), cfg.views, cfg.seed, dtype=torch.float16,
                    progress=progress, on_error=on_error)
    res = train(preset, cfg, None, bank=bank, progress=progress, start=start)
    if start is None or blend_weight == 1.0:
        return res
    return replace(res, head_state=blend(start, res.head_state, blend_weight))
