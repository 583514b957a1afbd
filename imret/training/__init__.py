"""Training attention heads (``imret train``): losses, data modes, view caching,
checkpoints. See ``trainer.train`` for the loop and ``checkpoint`` for the file."""
from __future__ import annotations

from .checkpoint import Checkpoint, load_checkpoint, model_from_checkpoint, save_checkpoint
from .config import TrainConfig
from .trainer import TrainResult, build_bank, train, training_extractor

__all__ = ["Checkpoint", "TrainConfig", "TrainResult", "build_bank", "load_checkpoint", "model_from_checkpoint",
           "save_checkpoint", "train", "training_extractor"]
