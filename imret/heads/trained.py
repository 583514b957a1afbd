"""Trained heads as one file each: what rebuilds the model, its weights, their digest.

``torch.save`` of a plain dict (read with ``weights_only=True``):

- ``format``: ``imret-head/1``; ``preset``: the ``Preset.to_dict()`` the head was
  trained for (backbone, head and extraction settings);
- ``state``: the head's tensors (float16 when shipped: the figures reported for a
  shipped file are measured with these rounded weights);
- ``digest``: sha256 of the state's bytes, checked on every load;
- ``recipe``: how it was trained (protocol, training config, seconds), ``data``: on
  what photos (and whether labels were used), ``figures``: what it scored.

The package ships one such file per attentive preset in ``imret/heads/weights/``
(made by ``benchmarks/train_shipped.py``); ``Extractor`` loads the one of its preset
when no other head state is given, so indexing, search, evaluation, the service and
Ray workers all get the trained head the same way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from ..config import Preset
from ..core.paths import package_file
from ..io.torchfile import load_weights_file, save_weights_file

FORMAT = "imret-head/1"
WEIGHTS_PACKAGE = "imret.heads.weights"


@dataclass
class TrainedHead:
    preset: dict
    state: dict[str, torch.Tensor]
    digest: str
    recipe: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)
    path: str | None = None

    def float_state(self) -> dict[str, torch.Tensor]:
        return {k: v.float() if v.is_floating_point() else v for k, v in self.state.items()}

    def matches(self, preset) -> bool:
        """Whether this head was trained for ``preset``'s backbone, head and extraction."""
        stored = Preset.from_dict(self.preset)  # a file written before a config field existed reads its default
        return stored.backbone == preset.backbone and stored.head == preset.head


def save_trained(path: str | os.PathLike, preset, state: dict[str, torch.Tensor], recipe: dict, data: dict,
                 figures: dict | None = None, half: bool = True) -> TrainedHead:
    fields = {"preset": preset.to_dict(), "recipe": dict(recipe), "data": dict(data), "figures": dict(figures or {})}
    state, digest = save_weights_file(path, FORMAT, state, fields, half)
    return TrainedHead(fields["preset"], state, digest, fields["recipe"], fields["data"], fields["figures"],
                       os.fspath(path))


def load_trained(path: str | os.PathLike) -> TrainedHead:
    """A file ``save_trained`` wrote; a foreign, broken or altered one is a ``WeightsError``."""
    path = os.fspath(path)
    obj = load_weights_file(path, FORMAT, "trained head", "imret trained-head file",
                            f"not an imret trained-head file (format {FORMAT})", required=("preset",))
    return TrainedHead(obj["preset"], dict(obj["state"]), obj["digest"], obj.get("recipe", {}), obj.get("data", {}),
                       obj.get("figures", {}), path)


def is_trained_head_file(path: str | os.PathLike) -> bool:
    try:
        return torch.load(os.fspath(path), map_location="cpu", weights_only=True).get("format") == FORMAT
    except Exception:
        return False


def shipped_path(preset_name: str) -> str | None:
    """The package's trained-head file for the preset named so, if it ships one."""
    return package_file(WEIGHTS_PACKAGE, f"{preset_name}.pt")


def shipped_for(preset) -> TrainedHead | None:
    """The shipped trained head of ``preset`` when it has one and it was trained for
    exactly this backbone and head (a preset whose head was changed gets none)."""
    path = shipped_path(preset.name)
    if path is None:
        return None
    th = load_trained(path)
    return th if th.matches(preset) else None


def learnable(preset: Preset) -> bool:
    """Whether the preset's head has weights to train (plain poolings have none)."""
    from . import HEADS
    from .common import AttentionHead

    return issubclass(HEADS.get(preset.head.name), AttentionHead)


def training_status(preset: Preset) -> str | None:
    """For a preset with a learnable head: whether the package ships it trained, on
    what data and by which recipe (None for plain poolings)."""
    if not learnable(preset):
        return None
    path = shipped_path(preset.name)
    if path is None:
        return "untrained (no shipped weights; train with 'imret train' or index with --adapt)"
    th = load_trained(path)
    if not th.matches(preset):
        return "untrained (the shipped weights were trained for another head configuration)"
    r, d = th.recipe, th.data
    cfg = r.get("train", {})
    figs = th.figures.get("paris6k-sub", {})
    score = ", ".join(f"{k} {v}" for k, v in figs.items())
    frozen = "backbone frozen" + (" (with its tuned stages)" if preset.backbone.tuned else "")
    return (f"trained ({r.get('protocol', '?')}) on {d.get('photos', '?')} photos of {', '.join(d.get('folders', []))}"
            f" [labels: {d.get('labels', '?')}]; {cfg.get('loss', '?')} loss, {cfg.get('steps', '?')} steps at "
            f"{cfg.get('max_size', '?')} px, {frozen}; {r.get('notes', '')}"
            + (f"; the mean of the heads trained at seeds {', '.join(map(str, r['seeds']))} from one start"
               if len(r.get("seeds", ())) > 1 else "")
            + (f"; shipped {r['blend']:g} of the way from its untrained start to the trained weights"
               if r.get("blend", 1) != 1 else "")
            + (f"; paris6k-sub mAP: {score}" if score else "") + f"; sha256 {th.digest[:12]}")
