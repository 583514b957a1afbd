"""Which backbone parameters train: none by default, or those of the last N stages.

Stages are listed per network class, in forward order, up to the stage the
backbone extracts from; the stem counts as the first stage.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..config import ConfigError
from ..core.registry import Registry

STAGES: Registry[Callable[[nn.Module, str], list[list[nn.Module]]]] = Registry("backbone network")


@STAGES.register("EfficientNetLite")
def _efficientnet_lite(net, stage: str) -> list[list[nn.Module]]:
    out: list[list[nn.Module]] = [[net._conv_stem, net._bn0]]
    first = 0
    for name, info in net.stages.items():
        if name == "head":
            out.append([net._conv_head, net._bn1])
        else:
            out.append(list(net._blocks[first:info.last_block + 1]))
            first = info.last_block + 1
        if name == stage:
            break
    return out


@STAGES.register("ResNet")
def _resnet(net, stage: str) -> list[list[nn.Module]]:
    layers = ["layer1", "layer2", "layer3", "layer4"]
    return [[net.conv1, net.bn1]] + [[getattr(net, n)] for n in layers[:layers.index(stage) + 1]]


@STAGES.register("VGG16")
def _vgg16(net, stage: str) -> list[list[nn.Module]]:
    out: list[list[nn.Module]] = [[]]
    for m in net.features_seq[:-1]:  # extraction stops before the last pool
        out[-1].append(m)
        if isinstance(m, nn.MaxPool2d):
            out.append([])
    return out


def backbone_stages(backbone) -> list[list[nn.Module]]:
    return STAGES.get(type(backbone.net).__name__)(backbone.net, backbone.stage)


def unfreeze_last(backbone, n: int) -> list[nn.Parameter]:
    """Freeze ``backbone`` but for its last ``n`` stages; return the parameters that train."""
    for p in backbone.parameters():
        p.requires_grad_(False)
    if n == 0:
        return []
    stages = backbone_stages(backbone)
    if n > len(stages):
        raise ConfigError(f"train_blocks={n}, but backbone {type(backbone.net).__name__} has {len(stages)} stages "
                          f"up to {backbone.stage!r}")
    params = [p for group in stages[-n:] for m in group for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params
