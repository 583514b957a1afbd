"""ResNet-50/101 and VGG16, the backbones of the papers, with torchvision's layer names.

torchvision and timm checkpoints of these nets share the key names used here, so
a checkpoint file the user names loads without conversion. No weights ship with
imret for these nets: ``weights`` must name a local file.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.registry import BACKBONES
from .base import BackboneSpec, Stage


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


RESNET_DEPTHS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}


class ResNet(nn.Module):
    """``features(x, stage)``: stage 'layer3' (conv4, stride 16, 1024 ch) or 'layer4' (conv5, stride 32, 2048 ch)."""

    def __init__(self, depth: str = "resnet50", num_classes: int = 1000):
        super().__init__()
        blocks = RESNET_DEPTHS[depth]
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, (n, width) in enumerate(zip(blocks, (64, 128, 256, 512))):
            layers = []
            for j in range(n):
                layers.append(Bottleneck(cin, width, stride=(2 if (j == 0 and i > 0) else 1)))
                cin = width * 4
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.fc = nn.Linear(2048, num_classes)
        self.stages = {"layer3": Stage(1024, 16), "layer4": Stage(2048, 32)}

    def features(self, x: torch.Tensor, stage: str = "layer4", start: int = 0, stop: int | None = None) -> torch.Tensor:
        for group in self.param_groups(stage)[start:stop]:
            x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1) if group[0] is self.conv1 else group[0](x)
        return x

    def strided_layers(self, stage: str) -> list[tuple[int, int, int | None]]:
        # conv1 7×7/2, max-pool 3×3/2, then a 3×3/2 convolution per later stage (layer2 on)
        later = {"layer3": 2, "layer4": 3}[stage]
        return [(7, 2, 3), (3, 2, 1)] + [(3, 2, 1)] * later

    def param_groups(self, stage: str) -> list[list[nn.Module]]:
        layers = ["layer1", "layer2", "layer3", "layer4"]
        return [[self.conv1, self.bn1]] + [[getattr(self, n)] for n in layers[:layers.index(stage) + 1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16(nn.Module):
    """``features`` stops before the last max-pool: conv5_3 after ReLU, 512 ch at stride 16."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features_seq = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, num_classes),
        )
        self.stages = {"conv5": Stage(512, 16)}

    def features(self, x: torch.Tensor, stage: str = "conv5", start: int = 0, stop: int | None = None) -> torch.Tensor:
        for group in self.param_groups(stage)[start:stop]:
            for m in group:
                x = m(x)
        return x

    def strided_layers(self, stage: str) -> list[tuple[int, int, int | None]]:
        return [(2, 2, 0)] * 4  # four 2×2/2 max-pools before conv5

    def param_groups(self, stage: str) -> list[list[nn.Module]]:
        return vgg_groups(self.features_seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features_seq(x), 7)
        return self.classifier(torch.flatten(x, 1))

    # torchvision names the trunk 'features.N'; our attribute is 'features_seq' so
    # that 'features' can be the method every backbone has.
    @staticmethod
    def remap_keys(state: dict) -> dict:
        return {("features_seq." + k[len("features."):] if k.startswith("features.") else k): v for k, v in state.items()}


def vgg_groups(features_seq: nn.Sequential) -> list[list[nn.Module]]:
    """VGG's trunk up to conv5_3 in groups that each end at a max-pool (conv5: the last group)."""
    out: list[list[nn.Module]] = [[]]
    for m in features_seq[:-1]:  # extraction stops before the last pool
        out[-1].append(m)
        if isinstance(m, nn.MaxPool2d):
            out.append([])
    return out


BACKBONES.register("resnet50")(BackboneSpec(net=lambda: ResNet("resnet50"), default_stage="layer4",
                                            local_stage="layer3"))
BACKBONES.register("resnet101")(BackboneSpec(net=lambda: ResNet("resnet101"), default_stage="layer4",
                                             local_stage="layer3"))
BACKBONES.register("vgg16")(BackboneSpec(net=VGG16, default_stage="conv5", local_stage="conv5",
                                         remap=VGG16.remap_keys))
