"""Label-free adaptation of a head to the collection being indexed (``imret index --adapt``).

The collection's photos are the training set, each its own instance: its
positives are strong augmentations of it, its negatives the other photos
(``unsupervised`` mode). No label is read, so the figures of the collection's own
queries stay honest. Training starts from the head the preset ships trained (or its
untrained start) and runs ``ADAPT`` (a few minutes on 2 CPU cores for ~100 photos).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..config import Preset
from ..errors import ImretError
from ..core.paths import collect_paths
from .bank import ViewBank
from .config import TrainConfig
from .trainer import TrainResult, train, training_extractor

# 3 views per photo (the cost of the backbone is paid once per view), made at the preset's
# own scale-1 size (``adapt`` sets it), as the shipped heads were trained: a head learns
# on maps shaped like the ones it is later applied to.
ADAPT = TrainConfig(mode="unsupervised", loss="triplet", steps=150, batch=8, negatives=4, views=3,
                    refresh_every=50, lr=5e-4, seed=0, checkpoint_every=150)


def adapt(preset: Preset, sources: Sequence[str], cfg: TrainConfig = ADAPT, device=None, progress: bool = False,
          on_error: Callable[[str, str], None] | None = None, start: dict | None = None) -> TrainResult:
    """Train ``preset``'s head on the photos under ``sources`` without labels, on views at
    the preset's scale-1 size. ``start``: the head state to start from (default: the
    shipped trained head, if any)."""
    from ..heads.common import AttentionHead
    from ..heads import HEADS

    if not issubclass(HEADS.get(preset.head.name), AttentionHead):
        raise ImretError(f"--adapt: preset {preset.name!r} has no learnable head (head {preset.head.name!r}); "
                         "pick an attentive preset, e.g. lite0-dagf")
    paths = collect_paths(list(sources))
    if len(paths) < 2:
        raise ImretError(f"--adapt needs at least two photos to contrast, found {len(paths)} in {', '.join(sources)}")
    cfg = cfg.replace(max_size=preset.extraction.max_size)
    ex = training_extractor(preset, cfg, device)
    if start is None and ex.trained is not None:
        start = ex.trained.float_state()
    bank = ViewBank(ex, paths, list(range(len(paths))), cfg.views, cfg.seed, dtype=torch.float16,
                    progress=progress, on_error=on_error)
    return train(preset, cfg, None, bank=bank, progress=progress, start=start)
