"""The backbone protocol: what a network file declares, and the one wrapper built from it.

A backbone network (``nn.Module``) declares, for every stage it can extract from,
a ``Stage`` (its channels and stride) under the stage's name; and it answers three questions
about a stage, which are all that the extractor, the local features and training ask:

- ``features(x, stage, start=0, stop=None)``: B×3×H×W normalised images → B×C×h×w map
  of that stage; with ``start``/``stop``, only ``param_groups(stage)[start:stop]``, ``x``
  being the map that enters group ``start`` (training caches the frozen groups' output);
- ``strided_layers(stage)``: (kernel, stride, padding) of the layers that change the
  resolution up to that stage, input first (padding None: TensorFlow 'SAME'), from
  which the receptive-field centre of every map position follows
  (``imret.local.extract.receptive_field_centres``);
- ``param_groups(stage)``: its parameters in forward order up to that stage, one list of
  modules per group, the stem first (``imret.training.unfreeze`` trains the last N).

A network file registers one ``BackboneSpec`` per name: how to build the net, its input
normalisation, its default stage for global descriptors and its stride-16 stage for
DELF local features, and where its weights come from. Adding a backbone is one file
(net + ``BACKBONES.register``) and its module in ``imret.core.registry.BUILTINS``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..core.errors import WeightsError

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class Stage:
    """A stage a backbone can extract from (its name is its key in ``stages``): output
    channels and stride (input pixels per map cell)."""

    channels: int
    stride: int


class Backbone(nn.Module):
    """A network cut at one stage, with its input normalisation: [0, 255] images → B×C×h×w."""

    def __init__(self, net: nn.Module, stage: str, mean: tuple[float, float, float],
                 std: tuple[float, float, float]):
        super().__init__()
        self.net = net
        info: Stage = net.stages[stage]
        self.stage = stage
        self.out_channels = info.channels
        self.stride = info.stride
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images_0_255: torch.Tensor) -> torch.Tensor:
        return self.net.features((images_0_255 - self.mean) / self.std, self.stage)

    def frozen_part(self, images_0_255: torch.Tensor, trained: int) -> torch.Tensor:
        """The map entering the last ``trained`` parameter groups (``trained`` 0: the
        whole backbone's map); ``trained_part`` of it is ``forward``'s map."""
        stop = len(self.param_groups()) - trained
        return self.net.features((images_0_255 - self.mean) / self.std, self.stage, 0, stop)

    def trained_part(self, frozen_map: torch.Tensor, trained: int) -> torch.Tensor:
        """The last ``trained`` parameter groups on a ``frozen_part`` map."""
        if trained == 0:
            return frozen_map
        return self.net.features(frozen_map, self.stage, len(self.param_groups()) - trained, None)

    def strided_layers(self) -> list[tuple[int, int, int | None]]:
        return self.net.strided_layers(self.stage)

    def param_groups(self) -> list[list[nn.Module]]:
        return self.net.param_groups(self.stage)


@dataclass(frozen=True)
class BackboneSpec:
    """What a registered backbone name stands for. ``net()`` builds the network with random
    weights; ``weights(cfg)`` is the checkpoint file to load (None: none ships, the user
    must name one), ``remap`` turns its key names into the net's; ``default_stage``
    feeds global descriptors, ``local_stage`` (stride 16, DELF's conv4) local features."""

    net: Callable[[], nn.Module]
    default_stage: str
    local_stage: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights: Callable[[object], str | None] = lambda cfg: None
    remap: Callable[[dict], dict] = lambda state: state

    def __call__(self, cfg) -> Backbone:
        net = self.net()
        if cfg.weights != "random":
            path = cfg.weights or self.weights(cfg)
            if not path:
                raise WeightsError(None, f"backbone {cfg.name!r} ships no weights: name a torchvision or timm "
                                   "checkpoint file with --weights PATH (or weights='random' for an untrained net)")
            load_weights(net, self.remap(read_state_dict(path)), path, cfg.name)
        stage = cfg.stage or self.default_stage
        if stage not in net.stages:
            raise ValueError(f"backbone {cfg.name}: unknown stage {stage!r}; known: {list(net.stages)}")
        backbone = Backbone(net, stage, self.mean, self.std)
        if cfg.tuned:
            from .tuned import apply_tuned, load_tuned

            apply_tuned(backbone, load_tuned(cfg.tuned), cfg.name)
        return backbone


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a torchvision/timm/imret checkpoint, without unpickling arbitrary objects."""
    from ..io.torchfile import load_torch_file

    path = os.fspath(path)
    obj = load_torch_file(path, "weights", "PyTorch checkpoint")
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(path, "holds no state dict of tensors")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_weights(net: nn.Module, state: dict[str, torch.Tensor], path: str, backbone: str) -> None:
    """Load ``state`` into ``net``; the classifier may be missing or of another size."""
    own = net.state_dict()
    classifier = tuple(k for k in own if k.startswith(("fc.", "_fc.", "classifier.")))
    missing = [k for k in own if k not in state and k not in classifier and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and k not in classifier and state[k].shape != own[k].shape]
    if missing or wrong or len(unexpected) > len(state) // 2:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if wrong:
            detail.append(f"{len(wrong)} of another shape (e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        raise WeightsError(path, f"does not fit backbone {backbone!r}: " + "; ".join(detail))
    keep = {k: v for k, v in state.items() if k in own and state[k].shape == own[k].shape}
    net.load_state_dict(keep, strict=False)
