"""Gradients reach the head always, the backbone only in the stages asked for."""
import pytest
import torch
from torch import nn

from imret.backbones import build_backbone
from imret.backbones.resnet_vgg import _VGG16, vgg_groups
from imret.config import BackboneConfig, ConfigError, HeadConfig
from imret.heads import build_head
from imret.training.unfreeze import backbone_stages, unfreeze_last


@pytest.fixture(scope="module")
def lite0():
    return build_backbone(BackboneConfig("efficientnet-lite0"))


def _step(backbone, head):
    img = torch.rand(1, 3, 64, 80) * 255
    head(backbone(img)).pow(2).sum().backward()


def test_frozen_backbone_gets_no_gradient_and_the_head_does(lite0):
    head = build_head(HeadConfig("dagf"), lite0.out_channels)
    assert unfreeze_last(lite0, 0) == []
    lite0.zero_grad(set_to_none=True)
    _step(lite0, head)
    assert all(p.grad is None for p in lite0.parameters())
    # every head parameter is on the gradient's path (layers behind a zero-initialised
    # score get exact zeros at the very start, not None)
    assert all(p.grad is not None for p in head.parameters())
    assert head.channel.theta.grad.abs().sum() > 0 and head.spatial.score.weight.grad.abs().sum() > 0


def test_last_stage_trains_and_nothing_before_it(lite0):
    stages = backbone_stages(lite0)
    assert len(stages) == 9  # stem, seven block stages, conv head
    assert stages[-1] == [lite0.net._conv_head, lite0.net._bn1]
    trained = unfreeze_last(lite0, 2)
    expect = {id(p) for m in stages[-2] + stages[-1] for p in m.parameters()}
    assert {id(p) for p in trained} == expect
    lite0.zero_grad(set_to_none=True)
    _step(lite0, build_head(HeadConfig("gem", {"learn_p": True}), lite0.out_channels))
    got = {id(p) for p in lite0.parameters() if p.grad is not None}
    assert got == expect
    unfreeze_last(lite0, 0)


def test_stages_end_at_the_extraction_stage():
    bb = build_backbone(BackboneConfig("efficientnet-lite0", weights="random", stage="stage5"))
    stages = backbone_stages(bb)
    assert len(stages) == 6 and stages[-1][-1] is bb.net.last_block("stage5")
    with pytest.raises(ConfigError, match="stages"):
        unfreeze_last(bb, 7)


def test_resnet_and_vgg_stages():
    torch.manual_seed(0)
    resnet = build_backbone(BackboneConfig("resnet50", weights="random"))
    stages = backbone_stages(resnet)
    assert [type(g[0]).__name__ for g in stages] == ["Conv2d"] + ["Sequential"] * 4
    assert stages[-1][0] is resnet.net.layer4
    layers = []
    cin = 3
    for v in _VGG16:
        layers += [nn.MaxPool2d(2, 2)] if v == "M" else [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
        cin = v if v != "M" else cin

    groups = vgg_groups(nn.Sequential(*layers))  # VGG16's own grouping, without its 100M-weight classifier
    convs = [[m.out_channels for m in g if isinstance(m, nn.Conv2d)] for g in groups]
    assert convs == [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]
