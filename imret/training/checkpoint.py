"""Training checkpoints: one file that rebuilds the exact trained model and resumes training.

``torch.save`` of a plain dict, readable with ``torch.load(weights_only=True)``:

- ``meta``: format and version, the preset (``Preset.to_dict()``), the training
  config, the data path, the step reached, the per-step losses and the optimizer
  state;
- ``head``: the head's tensors; ``loss``: the loss's (e.g. a classifier);
- ``pool``: the descriptor pool hard negatives were being mined from, so that a
  resumed run takes the very steps an uninterrupted one would;
- ``state_dict``: the whole backbone, only when stages of it were trained. The
  key is the one backbone loaders look for, so the checkpoint file itself is then
  the backbone's ``weights``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..config import Preset
from ..core import __version__
from ..core.atomic import atomic_write
from ..core.errors import WeightsError
from ..io.torchfile import load_torch_file
from .config import TrainConfig

FORMAT = "imret-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    meta: dict
    head: dict[str, torch.Tensor]
    loss: dict[str, torch.Tensor]
    pool: torch.Tensor | None = None
    backbone: dict[str, torch.Tensor] | None = None

    @property
    def preset(self) -> Preset:
        return Preset.from_dict(self.meta["preset"])

    @property
    def train(self) -> TrainConfig:
        return TrainConfig.from_dict(self.meta["train"])

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def make_meta(preset: Preset, cfg: TrainConfig, data: str | None, step: int, losses: list[float],
              optimizer_state: dict) -> dict:
    return {"format": FORMAT, "version": VERSION, "imret_version": __version__, "preset": preset.to_dict(),
            "train": cfg.to_dict(), "data": data and os.path.abspath(data), "step": int(step),
            "losses": [float(v) for v in losses], "optimizer": optimizer_state}


def save_checkpoint(path: str | os.PathLike, ck: Checkpoint) -> None:
    """Write ``ck`` to ``path`` through a temporary file, so an interruption leaves the
    previous checkpoint or the new one, never half of one."""
    path = os.fspath(path)
    obj = {"meta": ck.meta, "head": ck.head, "loss": ck.loss}
    if ck.pool is not None:
        obj["pool"] = ck.pool
    if ck.backbone is not None:
        obj["state_dict"] = ck.backbone
    atomic_write(path, lambda tmp: torch.save(obj, tmp), prefix=".imret-checkpoint-")


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    path = os.fspath(path)
    obj = load_torch_file(path, "checkpoint")
    meta = obj.get("meta") if isinstance(obj, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise WeightsError(path, "not an imret training checkpoint (made by 'imret train')")
    if meta.get("version") != VERSION:
        raise WeightsError(path, f"checkpoint format version {meta.get('version')}; this imret reads {VERSION}")
    return Checkpoint(meta, obj["head"], obj.get("loss", {}), obj.get("pool"), obj.get("state_dict"))


def model_from_checkpoint(path: str | os.PathLike) -> tuple[Preset, dict[str, torch.Tensor]]:
    """The preset and head state that extract descriptors as the trained model does:
    from a training checkpoint, or from a trained-head file (``imret.heads.trained``:
    a shipped head, or one ``imret index --adapt`` wrote)."""
    from ..heads.trained import FORMAT as HEAD_FORMAT, load_trained

    obj = load_torch_file(path, "checkpoint")
    if isinstance(obj, dict) and obj.get("format") == HEAD_FORMAT:
        th = load_trained(path)
        return Preset.from_dict(th.preset), th.float_state()
    ck = load_checkpoint(path)
    preset = ck.preset
    if ck.backbone is not None:  # the whole trained backbone, tuned stages included
        preset = preset.replace(backbone=preset.backbone.with_weights(os.path.abspath(os.fspath(path))))
    return preset, ck.head
