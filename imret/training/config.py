"""``TrainConfig``: how ``imret train`` trains a head (validated once, saved in checkpoints)."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, _Config, check_ints


@dataclass(frozen=True)
class TrainConfig(_Config):
    """``mode``: how ``data`` is read (see ``imret.training.data.SOURCES``).
    ``loss``: 'triplet', 'contrastive' or 'cross-entropy'. ``batch``: tuples per step,
    each an anchor, a positive and ``negatives`` hard negatives mined from a pool of
    descriptors of every training view, recomputed every ``refresh_every`` steps.
    ``margin``: None takes the loss's own default. ``views``: per image, the photo
    itself and views-1 strong augmentations of it, made once (and, with a frozen
    backbone, their feature maps cached). ``max_size``: longest side of the training
    views. ``train_blocks``: how many of the backbone's last stages are trained too
    (0: the backbone stays frozen). ``mine``: also count as one instance the photos that
    geometric verification of their local features links (``imret.training.mine``; no
    label is read). ``attention_lr``: the learning rate of a head's input-independent
    attention weights (``AttentionHead.input_independent_parameters``: ICSA's, IA's): they
    start at 1, and Adam moves a weight by about its rate per step, so a short run at ``lr``
    leaves them near the identity; None: ``lr``."""

    mode: str = "unsupervised"
    loss: str = "triplet"
    steps: int = 300
    batch: int = 8
    negatives: int = 4
    margin: float | None = None
    lr: float = 1e-3
    weight_decay: float = 0.0
    refresh_every: int = 50
    views: int = 4
    max_size: int = 320
    train_blocks: int = 0
    seed: int = 0
    checkpoint_every: int = 100
    mine: bool = False
    attention_lr: float | None = None

    def __post_init__(self):
        from .data import SOURCES
        from .losses import LOSSES

        if self.mode not in SOURCES:
            raise ConfigError(f"unknown training mode {self.mode!r}; known: {', '.join(SOURCES.names())}")
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; known: {', '.join(LOSSES.names())}")
        check_ints(self, ("steps", "batch", "negatives", "refresh_every", "checkpoint_every"))
        check_ints(self, ("views",), least=2)  # the photo and at least one augmentation
        check_ints(self, ("train_blocks",), least=0)
        if not (isinstance(self.max_size, int) and 32 <= self.max_size <= 4096):
            raise ConfigError(f"max_size must be an integer in [32, 4096], got {self.max_size!r}")
        if self.margin is not None and not self.margin > 0:
            raise ConfigError(f"margin must be positive, got {self.margin}")
        if not self.lr > 0 or not self.weight_decay >= 0:
            raise ConfigError(f"lr must be positive and weight_decay non-negative, got {self.lr}, {self.weight_decay}")
        if self.attention_lr is not None and not (isinstance(self.attention_lr, (int, float))
                                                  and self.attention_lr > 0):
            raise ConfigError(f"attention_lr must be positive (or None: lr), got {self.attention_lr!r}")
        if not isinstance(self.mine, bool):
            raise ConfigError(f"mine must be true or false, got {self.mine!r}")
        if not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
