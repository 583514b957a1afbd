"""A backbone is one file that follows the protocol of ``imret/backbones/base.py``: a new
net registered this way works for global descriptors, local features and training
without any other file knowing it."""
import numpy as np
import pytest
import torch
from torch import nn

from imret.backbones import BACKBONES, BackboneSpec, Stage, build_backbone, local_stage
from imret.config import BackboneConfig
from imret.local.config import LocalConfig
from imret.local.extract import receptive_field_centres
from imret.training.unfreeze import unfreeze_last

NAME = "test-two-stage-net"


class TwoStageNet(nn.Module):
    """conv 3×3/2 (pad 1) → 'half' (4 ch, stride 2); conv 3×3/2 (pad 1) → 'quarter' (6 ch, stride 4)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.down = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.stages = {"half": Stage(4, 2), "quarter": Stage(6, 4)}

    def features(self, x, stage="quarter", start=0, stop=None):
        for (m,) in self.param_groups(stage)[start:stop]:
            x = m(x)
        return x

    def strided_layers(self, stage):
        return [(3, 2, 1)] if stage == "half" else [(3, 2, 1), (3, 2, 1)]

    def param_groups(self, stage):
        return [[self.stem]] if stage == "half" else [[self.stem], [self.down]]


if NAME not in BACKBONES:
    BACKBONES.register(NAME)(BackboneSpec(net=TwoStageNet, default_stage="quarter", local_stage="half",
                                          mean=(0.0,) * 3, std=(255.0,) * 3))


def test_a_registered_net_builds_at_its_default_stage_with_its_normalisation():
    torch.manual_seed(0)
    bb = build_backbone(BackboneConfig(NAME, weights="random"))
    assert (bb.stage, bb.out_channels, bb.stride) == ("quarter", 6, 4)
    x = torch.rand(1, 3, 16, 20) * 255
    with torch.no_grad():
        assert torch.allclose(bb(x), bb.net.features(x / 255.0, "quarter"))
    assert bb(x).shape == (1, 6, 4, 5)


def test_local_features_take_its_local_stage_and_its_geometry():
    assert local_stage(NAME) == "half"
    cfg = LocalConfig(backbone=BackboneConfig(NAME, weights="random"))
    assert cfg.backbone.stage == "half"
    bb = build_backbone(cfg.backbone)
    ys, xs = receptive_field_centres(bb, (8, 8), (4, 4))
    # one 3×3/2 conv padded by 1: output k is centred on input pixel 2k + 1 − 1
    assert np.array_equal(ys, [0.0, 2.0, 4.0, 6.0]) and np.array_equal(xs, ys)


def test_training_unfreezes_its_own_parameter_groups():
    bb = build_backbone(BackboneConfig(NAME, weights="random"))
    trained = unfreeze_last(bb, 1)
    assert {id(p) for p in trained} == {id(p) for p in bb.net.down.parameters()}
    assert not any(p.requires_grad for p in bb.net.stem.parameters())


def test_the_frozen_part_then_the_trained_part_is_the_whole_backbone():
    torch.manual_seed(0)
    bb = build_backbone(BackboneConfig(NAME, weights="random"))
    x = torch.rand(1, 3, 16, 20) * 255
    with torch.no_grad():
        half = bb.frozen_part(x, 1)
        assert torch.allclose(half, bb.net.stem(x / 255.0))  # the map entering 'down', normalised input
        assert torch.allclose(bb.trained_part(half, 1), bb.net.down(half))
        assert torch.equal(bb.frozen_part(x, 0), bb(x)) and torch.equal(bb.trained_part(half, 0), half)
        assert torch.equal(bb.trained_part(bb.frozen_part(x, 2), 2), bb(x))
        assert torch.equal(bb.frozen_part(x, 2), x / 255.0)  # nothing frozen: the normalised image


@pytest.mark.parametrize("name", ["efficientnet-lite0", "resnet50", "vgg16"])
def test_every_net_splits_exactly_at_each_of_its_groups(name):
    torch.manual_seed(0)
    bb = build_backbone(BackboneConfig(name, weights="random")).eval()
    x = torch.rand(1, 3, 64, 48) * 255
    with torch.no_grad():
        whole = bb(x)
        for trained in range(len(bb.param_groups()) + 1):
            assert torch.equal(bb.trained_part(bb.frozen_part(x, trained), trained), whole), trained
