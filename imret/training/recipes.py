"""How each shipped head is trained (``benchmarks/train_shipped.py``) and how
``imret index --adapt`` adapts a head to a collection.

A recipe is a ``TrainConfig`` and a note saying why; ``imret presets NAME`` prints the
recipe stored in each shipped file.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError
from .adapt import blend
from .config import TrainConfig
from .trainer import TrainResult

# Folders under the shared data root whose photos the shipped heads are trained on,
# without any label (each photo its own instance).
TRAIN_DATA = ("paris6k-sub/jpg", "ukbench/full", "fordham-places")

# Views at the size of the 'default' preset's first scale, so a head learns on maps
# shaped like the ones it is later applied to.
_BASE = TrainConfig(mode="unsupervised", views=4, max_size=512, seed=0, batch=8, negatives=4, refresh_every=50)


@dataclass(frozen=True)
class Recipe:
    """``blend``: the shipped head lies this far from its untrained start towards the
    trained weights (weight-space interpolation, as ``--adapt`` blends; 1 ships the trained
    head whole)."""

    config: TrainConfig
    notes: str = ""
    blend: float = 1.0

    def __post_init__(self):
        if not 0.0 < self.blend <= 1.0:
            raise ConfigError(f"recipe blend must lie in (0, 1], got {self.blend!r}")

    def shipped_state(self, res: TrainResult) -> dict:
        """The head state this recipe ships from the training run ``res``."""
        if self.blend == 1.0:
            return res.head_state
        if res.start_state is None:
            raise ValueError("recipe blend: the run was resumed, so its untrained start is unknown; train it whole")
        return blend(res.start_state, res.head_state, self.blend)


SHIPPED_RECIPES: dict[str, Recipe] = {
    # Shipped halfway from its untrained start (the head as built, its attention at identity:
    # 58.9 Hard on paris6k-sub, below GeM's 62.1 on the same tuned backbone) to the trained
    # weights: trained whole, the head scored below that start on paris6k-sub landmarks it never
    # saw (leave-one-landmark-out folds, Hard 55.3 and 52.2 at seeds 0 and 1 against 58.9), and at
    # seed 1 on the photos it trained on too (51.5); halfway, 58.6 and 59.1 (seen: 58.4, 57.8).
    # 0.5 is --adapt's blend (WiSE-FT's midpoint), not a weight picked on these photos.
    "lite0-dagf": Recipe(_BASE.replace(loss="triplet", steps=150, lr=1e-3, checkpoint_every=150),
                         "triplet on hard negatives", blend=0.5),
    # Kim & Yoon train with cross-entropy over landmark classes; without labels (each photo
    # its own class, 191 classes of 4 views) cross-entropy overfits the views: measured
    # 29.1 Hard mAP on paris6k-sub against 44.6 untrained, so the label-free recipe is triplet.
    # lr 5e-4 (the --adapt rate) rather than 1e-3: at 1e-3 the regional head drifts below its
    # untrained state on Hard at each of 3 seeds (43.4 / 39.7 / 39.9), at 5e-4 less so
    # (48.1 / 42.7 / 42.0); the comparison was made on paris6k-sub, see docs/attention-heads.md.
    "lite0-regional": Recipe(_BASE.replace(loss="triplet", steps=150, lr=5e-4, checkpoint_every=150),
                             "triplet on hard negatives (label-free: cross-entropy over photos overfits)"),
    "lite0-icsa-netvlad": Recipe(_BASE.replace(loss="triplet", steps=150, lr=1e-3, checkpoint_every=150),
                                 "PCA + k-means start, then triplet"),
    "lite0-ia-netvlad": Recipe(_BASE.replace(loss="triplet", steps=150, lr=1e-3, checkpoint_every=150),
                               "PCA + k-means start, then triplet"),
    "lite0-selfsim": Recipe(_BASE.replace(loss="triplet", steps=150, lr=1e-3, checkpoint_every=150),
                            "triplet on hard negatives"),
}

# The fine-tuned backbone of the tuned presets (imret/backbones/weights/TUNED_NAME.pt):
# EfficientNet-Lite0's last two parameter groups (its last MBConv block and the 320->1280
# head conv, ~1.0 M parameters) trained label-free with GeM on the TRAIN_DATA photos,
# at each of TUNED_SEEDS, then averaged into one net (a "model soup", Wortsman et al. 2022)
# rather than one seed picked: the seeds' Hard mAP spreads by ~10 points on paris6k-sub,
# and picking one there would be picking on the scored photos. lr 1e-4: the head's 1e-3
# moves pretrained convolutions too far (benchmarks/bench_finetune.py).
TUNED_NAME = "lite0-ft2-v1"
TUNED_SEEDS = (0, 1, 2)
TUNED_RECIPE = Recipe(_BASE.replace(loss="triplet", steps=150, lr=1e-4, train_blocks=2, checkpoint_every=150),
                      "GeM with the last 2 groups trained, triplet on hard negatives; soup of seeds 0-2")
