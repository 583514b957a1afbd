import numpy as np
import pytest
import torch
from PIL import Image

from imret.backbones import BACKBONES, build_backbone, read_state_dict
from imret.backbones.efficientnet_lite import EfficientNetLite
from imret.backbones.resnet_vgg import ResNet
from imret.config import BackboneConfig
from imret.errors import WeightsError


def _imagenet_top5(net: EfficientNetLite, img: np.ndarray) -> list[int]:
    x = torch.from_numpy(np.array(Image.fromarray(img).resize((224, 224), Image.BILINEAR))).float()
    x = ((x - 127.0) / 128.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        return net(x)[0].topk(5).indices.tolist()


def test_packaged_lite0_weights_recognise_real_photos():
    from skimage import data

    bb = build_backbone(BackboneConfig("efficientnet-lite0"))
    # ImageNet classes: 281-285 cats, 967 espresso, 968 cup.
    assert {281, 282, 285} & set(_imagenet_top5(bb.net, data.chelsea())[:2])
    assert 967 in _imagenet_top5(bb.net, data.coffee())[:2]


def test_random_weights_do_not_recognise():
    from skimage import data

    torch.manual_seed(0)
    bb = build_backbone(BackboneConfig("efficientnet-lite0", weights="random"))
    assert not {281, 282, 285} & set(_imagenet_top5(bb.net, data.chelsea())[:1])


@pytest.mark.parametrize("stage,channels,stride", [("head", 1280, 32), ("stage5", 112, 16), ("stage3", 40, 8)])
def test_lite0_feature_map_shapes(stage, channels, stride):
    bb = build_backbone(BackboneConfig("efficientnet-lite0", stage=stage))
    assert (bb.out_channels, bb.stride) == (channels, stride)
    with torch.no_grad():
        f = bb(torch.rand(1, 3, 224, 320) * 255)
    assert f.shape == (1, channels, 224 // stride, 320 // stride)


def test_resnet_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    src = ResNet("resnet50").eval()
    path = tmp_path / "resnet50.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, path)
    bb = build_backbone(BackboneConfig("resnet50", weights=str(path)))
    x = torch.rand(1, 3, 96, 128) * 255
    with torch.no_grad():
        ours = bb(x)
        ref = src.features((x - bb.mean) / bb.std)
    assert ours.shape == (1, 2048, 3, 4)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_vgg_torchvision_key_names(tmp_path):
    from imret.backbones.resnet_vgg import VGG16

    torch.manual_seed(0)
    src = VGG16()
    tv_names = {("features." + k[len("features_seq."):] if k.startswith("features_seq.") else k): v
                for k, v in src.state_dict().items()}
    assert "features.28.weight" in tv_names  # conv5_3 as torchvision names it
    path = tmp_path / "vgg16.pth"
    torch.save(tv_names, path)
    bb = build_backbone(BackboneConfig("vgg16", weights=str(path)))
    assert torch.equal(bb.net.features_seq[28].weight, src.features_seq[28].weight)


def test_missing_weights_file_names_it(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsError, match="nope.pth: no such weights file"):
        build_backbone(BackboneConfig("resnet101", weights=str(missing)))


def test_backbone_without_packaged_weights_asks_for_a_file():
    with pytest.raises(WeightsError, match="--weights"):
        build_backbone(BackboneConfig("resnet50"))


def test_weights_of_another_net_do_not_fit(tmp_path):
    path = tmp_path / "lite0_as_resnet.pth"
    torch.save(EfficientNetLite("lite0").state_dict(), path)
    with pytest.raises(WeightsError, match="does not fit backbone 'resnet50'"):
        build_backbone(BackboneConfig("resnet50", weights=str(path)))


def test_garbage_weights_file(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match="garbage.pth: not a readable PyTorch checkpoint"):
        read_state_dict(path)


def test_registry_lists_paper_backbones():
    assert {"efficientnet-lite0", "resnet50", "resnet101", "vgg16"} <= set(BACKBONES.names())
