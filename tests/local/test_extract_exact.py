"""Exact, hand-computed cases for local-feature extraction: attention scores (softplus),
cross-scale suppression, receptive-field centres, the pyramid's scale 1, and the
L2 → PCA → L2 reduction."""
import math

import numpy as np
import pytest
import torch

from imret.local.attention import Attention
from imret.local.config import LocalConfig
from imret.local.extract import _axis_centres, cross_scale_nms


def test_attention_is_softplus_of_a_relu_layer():
    att = Attention(2, hidden=2)
    with torch.no_grad():
        att.conv1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]])[:, :, None, None])
        att.conv1.bias.zero_()
        att.conv2.weight.copy_(torch.tensor([[1.0, 1.0]])[:, :, None, None])
        att.conv2.bias.fill_(-1.0)
    # f = (2, 3): ReLU(2, −3) = (2, 0) → 2 − 1 = 1 → ln(1 + e); f = (−1, −2): (0, 2) → 1 → ln(1 + e);
    # f = (−1, 1): (0, 0) → −1 → ln(1 + 1/e) = 0.3133 (a ReLU instead of softplus would give 0)
    f = torch.tensor([[2.0, -1.0, -1.0], [3.0, -2.0, 1.0]])[None, :, None, :]
    out = att(f)[0, 0, 0]
    torch.testing.assert_close(out, torch.tensor([math.log(1 + math.e)] * 2 + [math.log(1 + 1 / math.e)]),
                               atol=1e-6, rtol=0)


def test_cross_scale_nms_by_hand():
    xy = np.array([[0, 0], [1, 0], [10, 10]], np.float32)
    cell = np.array([4, 4, 4], np.float32)
    scores = np.array([0.5, 0.9, 0.1], np.float32)
    # boxes of side 4: 0 and 1 overlap 3×4 = 12, union 20, IoU 0.6; 2 is apart
    assert cross_scale_nms(xy, cell, scores, 0.45, 10).tolist() == [1, 2]
    assert cross_scale_nms(xy, cell, scores, 0.6, 10).tolist() == [1, 0, 2]  # 0.6 is not above 0.6
    assert cross_scale_nms(xy, cell, scores, 0.59, 10).tolist() == [1, 2]
    assert cross_scale_nms(xy, cell, scores, 0.45, 1).tolist() == [1]
    assert cross_scale_nms(xy, cell, scores, 1.0, 2).tolist() == [1, 0]
    # a small cell inside a big one: IoU = 4/64
    big = cross_scale_nms(np.array([[0, 0], [0, 0]], np.float32), np.array([8, 2], np.float32),
                          np.array([1.0, 0.5], np.float32), 0.06, 5)
    assert big.tolist() == [0]
    assert cross_scale_nms(np.array([[0, 0], [0, 0]], np.float32), np.array([8, 2], np.float32),
                           np.array([1.0, 0.5], np.float32), 0.07, 5).tolist() == [0, 1]


def test_receptive_field_centres_by_hand():
    # explicit padding 1, 3×3/2: c_in = 2c + 1 − 1 = 2c
    np.testing.assert_allclose(_axis_centres([(3, 2, 1)], 8, 4), [0, 2, 4, 6])
    # TensorFlow SAME on 8: total padding (4−1)·2 + 3 − 8 = 1, none before: c_in = 2c + 1
    np.testing.assert_allclose(_axis_centres([(3, 2, None)], 8, 4), [1, 3, 5, 7])
    # SAME on 7: total (4−1)·2 + 3 − 7 = 2, one before: c_in = 2c
    np.testing.assert_allclose(_axis_centres([(3, 2, None)], 7, 4), [0, 2, 4, 6])
    # two layers, innermost last: 7×7/2 pad 3 then 3×3/2 pad 1 → c = 2·(2c) + 3 − 3 = 4c
    np.testing.assert_allclose(_axis_centres([(7, 2, 3), (3, 2, 1)], 16, 4), [0, 4, 8, 12])
    # a 2×2/2 pool without padding: c_in = 2c + 0.5
    np.testing.assert_allclose(_axis_centres([(2, 2, 0)], 8, 4), [0.5, 2.5, 4.5, 6.5])


def test_reduction_normalises_before_and_after_the_pca():
    from imret.local.store import LocalCodec

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32) + 2.0  # a mean far from 0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    codec = LocalCodec.fit(x, LocalConfig(pca_dim=4, storage="float32"))
    r = codec.reduce(x[:5])
    np.testing.assert_allclose(np.linalg.norm(r, axis=1), 1, atol=1e-5)
    # the L2 before the PCA: a descriptor's length does not matter (the mean subtraction would)
    np.testing.assert_allclose(codec.reduce(3 * x[:5]), r, atol=1e-5)
    # and it is (x − mean)·P, L2-normalised
    p = (x[:5] - codec.pca.mean) @ codec.pca.projection.T
    np.testing.assert_allclose(r, p / np.linalg.norm(p, axis=1, keepdims=True), atol=1e-5)


def test_pyramid_scales_of_a_photo_smaller_and_larger_than_the_maximum():
    from imret.local.extract import LocalExtractor

    class Fake:  # no backbone needed: only the pyramid geometry is checked
        _layers = [(3, 2, None)] * 4
        config = LocalConfig(max_size=64, upscale=False, scales=(0.5, 1.0, 2.0))

    img = np.zeros((40, 50, 3), np.uint8)
    sizes = [(s, tuple(x.shape[2:])) for s, x in LocalExtractor.pyramid(Fake(), img)]
    assert sizes == [(0.5, (20, 25)), (1.0, (40, 50)), (2.0, (80, 100))]  # its own pixels at scale 1
    Fake.config = LocalConfig(max_size=64, scales=(0.5, 1.0))  # upscale: the long side becomes 64
    sizes = [(s, tuple(x.shape[2:])) for s, x in LocalExtractor.pyramid(Fake(), img)]
    assert sizes == [(0.5, (26, 32)), (1.0, (51, 64))]
    # a scale whose short side is exactly one map cell (2⁴ = 16 px) is kept; below it, skipped
    Fake.config = LocalConfig(max_size=64, upscale=False, scales=(0.375, 0.4, 1.0))
    sizes = [(s, tuple(x.shape[2:])) for s, x in LocalExtractor.pyramid(Fake(), img)]
    assert sizes == [(0.4, (16, 20)), (1.0, (40, 50))]  # 0.375: 15×19
    big = np.zeros((200, 100, 3), np.uint8)
    Fake.config = LocalConfig(max_size=64, upscale=False, scales=(1.0,))
    assert [tuple(x.shape[2:]) for _, x in LocalExtractor.pyramid(Fake(), big)] == [(64, 32)]


def test_attention_training_pools_l2_normalised_features():
    from imret.local.train import attention_pool

    # two locations, f = (3, 4) and (0, 2), attention 1 and 0.5: the features are normalised to
    # (0.6, 0.8) and (0, 1) first → (1·(0.6, 0.8) + 0.5·(0, 1))/2 = (0.3, 0.65); unnormalised
    # features would give (1.5, 2.5)
    fmap = torch.tensor([[[[3.0, 0.0]], [[4.0, 2.0]]]])
    weights = torch.tensor([[[[1.0, 0.5]]]])
    out = attention_pool(lambda f: weights, fmap)
    torch.testing.assert_close(out, torch.tensor([0.3, 0.65]), atol=1e-6, rtol=0)


class _FakeStages:
    """What ``extract_array`` and ``dense`` need of an extractor, with hand-made maps."""

    def __init__(self, config, maps=()):
        from types import SimpleNamespace

        self.config, self.maps = config, list(maps)
        self.backbone = SimpleNamespace(stride=16)
        self.dim = 2

    def dense(self, img):
        yield from self.maps


def _two_scales():
    # scale 1: a 1×2 map, centres y 8, x 8 and 24; scale 2: a 2×2 map, centres 4 and 12 both ways
    f1 = torch.tensor([[[3.0, 1.0]], [[4.0, 0.0]]])
    a1 = torch.tensor([[0.9, 0.2]])
    f2 = torch.tensor([[[1.0, 2.0], [1.0, 0.0]], [[0.0, 0.0], [1.0, 2.0]]])
    a2 = torch.tensor([[0.7, 0.6], [0.1, 0.95]])
    return [(1.0, f1, a1, (np.array([8.0]), np.array([8.0, 24.0]))),
            (2.0, f2, a2, (np.array([4.0, 12.0]), np.array([4.0, 12.0])))]


def test_selection_by_threshold_score_and_cross_scale_suppression():
    from imret.local.extract import LocalExtractor

    img = np.zeros((32, 48, 3), np.uint8)  # max_size 48, no upscale: scale 1 is the photo's pixels
    cfg = LocalConfig(max_size=48, upscale=False, scales=(1.0, 2.0), score_threshold=0.5, max_features=3)
    # above 0.5: (s1: (8, 8) 0.9 cell 16), (s2: (4, 4) 0.7, (12, 4) 0.6, (12, 12) 0.95; cells 8).
    # Best first: (12, 12) 0.95; (8, 8) 0.9 overlaps it by 64/256 = 0.25 ≤ 0.45: kept; (4, 4) 0.7
    # overlaps (8, 8)'s cell by 0.25: kept; the limit of 3 is reached
    f = LocalExtractor.extract_array(_FakeStages(cfg, _two_scales()), img)
    assert f.xy.tolist() == [[12, 12], [8, 8], [4, 4]] and f.size == (32, 48)
    assert f.scales.tolist() == [2.0, 1.0, 2.0]
    np.testing.assert_allclose(f.scores, [0.95, 0.9, 0.7], atol=1e-6)
    # descriptors L2-normalised: (0, 2) → (0, 1); (3, 4) → (0.6, 0.8); (1, 0)
    np.testing.assert_allclose(f.descriptors, [[0, 1], [0.6, 0.8], [1, 0]], atol=1e-6)
    # IoU bound 0.2: (8, 8) is a duplicate of (12, 12) (0.25); (4, 4) and (12, 4) overlap no kept cell
    f = LocalExtractor.extract_array(_FakeStages(cfg.replace(nms_iou=0.2), _two_scales()), img)
    assert f.xy.tolist() == [[12, 12], [4, 4], [12, 4]]
    np.testing.assert_allclose(f.scores, [0.95, 0.7, 0.6], atol=1e-6)
    # a threshold of 0.92 keeps one; 0.7 is kept at a threshold of 0.7 (≥)
    f = LocalExtractor.extract_array(_FakeStages(cfg.replace(score_threshold=0.92), _two_scales()), img)
    assert f.xy.tolist() == [[12, 12]]
    assert (f.xy.dtype, f.scales.dtype, f.scores.dtype, f.descriptors.dtype) == (np.float32,) * 4
    # all below the threshold: no features
    f = LocalExtractor.extract_array(_FakeStages(cfg.replace(score_threshold=0.99), _two_scales()), img)
    assert len(f) == 0 and f.xy.shape == (0, 2) and f.descriptors.shape == (0, 2)
    f = LocalExtractor.extract_array(_FakeStages(cfg.replace(score_threshold=0.7, nms_iou=1.0), _two_scales()), img)
    assert f.xy.tolist() == [[12, 12], [8, 8], [4, 4]]
    # the photo twice as large (64×96, scale 1 halves it): cells in its pixels are 32 and 16
    big = np.zeros((64, 96, 3), np.uint8)
    maps = [(s, fm, a, (ys * 2, xs * 2)) for s, fm, a, (ys, xs) in _two_scales()]
    f = LocalExtractor.extract_array(_FakeStages(cfg.replace(nms_iou=0.2), maps), big)
    assert f.xy.tolist() == [[24, 24], [8, 8], [24, 8]]


def test_an_image_without_pyramid_scales_has_no_features():
    from imret.local.extract import LocalExtractor

    f = LocalExtractor.extract_array(_FakeStages(LocalConfig(max_size=48)), np.zeros((32, 48, 3), np.uint8))
    assert len(f) == 0 and f.xy.shape == (0, 2) and f.descriptors.shape == (0, 2) and f.size == (32, 48)
    assert (f.xy.dtype, f.scales.dtype, f.scores.dtype, f.descriptors.dtype) == (np.float32,) * 4
    assert f.scales.shape == (0,) and f.scores.shape == (0,)


def test_dense_maps_centres_back_to_the_original_pixels():
    from types import SimpleNamespace

    from imret.local.extract import LocalExtractor

    # a 32×48 photo seen at twice its size (64×96): four 2×2/2 pools, map 4×6; centres in the
    # resized image 16c + 7.5, in the photo (16c + 7.5 + 0.5)·32/64 − 0.5 = 8c + 3.5
    fmap = torch.arange(2 * 4 * 6, dtype=torch.float32).view(1, 2, 4, 6)
    fake = SimpleNamespace(
        pyramid=lambda img: iter([(2.0, torch.zeros(1, 3, 64, 96))]), device="cpu",
        backbone=lambda x: fmap, attention=lambda f: f[:, :1] * 0.5, _layers=[(2, 2, 0)] * 4)
    ((s, f, att, (ys, xs)),) = list(LocalExtractor.dense(fake, np.zeros((32, 48, 3), np.uint8)))
    assert s == 2.0 and f.shape == (2, 4, 6)
    torch.testing.assert_close(att, fmap[0, 0] * 0.5)
    np.testing.assert_allclose(ys, [3.5, 11.5, 19.5, 27.5])
    np.testing.assert_allclose(xs, [3.5, 11.5, 19.5, 27.5, 35.5, 43.5])


def test_receptive_field_geometry_of_the_backbones():
    from types import SimpleNamespace

    from imret.backbones.resnet_vgg import VGG16, ResNet
    from imret.local.extract import receptive_field_centres

    # the nets' own declarations (no weights needed: they depend on the stage alone)
    assert ResNet.strided_layers(None, "layer3") == [(7, 2, 3), (3, 2, 1), (3, 2, 1), (3, 2, 1)]
    assert len(ResNet.strided_layers(None, "layer4")) == 5
    assert VGG16.strided_layers(None, "conv5") == [(2, 2, 0)] * 4
    # ResNet layer3 (stride 16): c → 2c (7×7/2 pad 3) → 2c (pools and convs 3×3/2 pad 1): 16c
    layer3 = SimpleNamespace(strided_layers=lambda: ResNet.strided_layers(None, "layer3"))
    ys, xs = receptive_field_centres(layer3, (32, 64), (2, 4))
    np.testing.assert_allclose(ys, [0, 16])
    np.testing.assert_allclose(xs, [0, 16, 32, 48])


def test_receptive_field_centres_of_two_same_padded_layers():
    # 'SAME' twice on 7: sizes 7 → 4 → 2. Innermost (on 4): total pad (2−1)·2 + 3 − 4 = 1, none
    # before: c → 2c + 1; outer (on 7): total 2, one before: c → 2c. Together 4c + 2
    np.testing.assert_allclose(_axis_centres([(3, 2, None), (3, 2, None)], 7, 2), [2, 6])


def test_an_extractor_on_a_block_image_end_to_end():
    from torch import nn

    from imret.backbones import Backbone
    from imret.local.extract import LocalExtractor

    from imret.backbones import Stage

    class Blocks(nn.Module):  # a stand-in "conv5": the mean colour of each 16×16 block
        stages = {"conv5": Stage(3, 16)}

        def features(self, x, stage):
            return torch.nn.functional.avg_pool2d(x, 16)

        def strided_layers(self, stage):
            return [(2, 2, 0)] * 4  # VGG16's four 2×2 pools

    backbone = Backbone(Blocks(), "conv5", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    # attention: softplus(0.01·R − 1): R = 200 → ln(1 + e), 100 → ln 2, 0 → ln(1 + 1/e)
    state = {"conv1.weight": torch.zeros(4, 3, 1, 1), "conv1.bias": torch.zeros(4),
             "conv2.weight": torch.zeros(1, 4, 1, 1), "conv2.bias": torch.tensor([-1.0])}
    state["conv1.weight"][0, 0] = 1.0
    state["conv2.weight"][0, 0] = 0.01
    cfg = LocalConfig(max_size=48, upscale=False, scales=(0.25, 1.0), max_features=3, attention_hidden=4)
    ex = LocalExtractor(cfg, attention_state=state, device="cpu", backbone=backbone)
    assert ex.dim == 3 and ex._layers == [(2, 2, 0)] * 4
    assert all(torch.equal(ex.attention_state()[k], v) for k, v in state.items())
    img = np.zeros((32, 48, 3), np.uint8)
    img[:16, :16] = (200, 150, 0)
    img[:16, 16:32] = (0, 30, 40)
    img[:16, 32:] = (100, 0, 0)
    img[16:] = (0, 0, 50)
    # scale 0.25 (8×12) is below one map cell (16 px) and skipped; scale 1: a 2×3 map, centres
    # 16c + 7.5. Best three: (7.5, 7.5) R 200, (39.5, 7.5) R 100, then the first of the R = 0 cells
    f = ex.extract(img)
    assert f.xy.tolist() == [[7.5, 7.5], [39.5, 7.5], [23.5, 7.5]] and f.scales.tolist() == [1.0] * 3
    np.testing.assert_allclose(f.scores, [math.log(1 + math.e), math.log(2), math.log(1 + 1 / math.e)], atol=1e-5)
    np.testing.assert_allclose(f.descriptors, [[0.8, 0.6, 0], [1, 0, 0], [0, 0.6, 0.8]], atol=1e-6)
    assert f.size == (32, 48)


def test_receptive_field_centres_of_efficientnet_lite_stage5():
    from imret.backbones import Backbone
    from imret.backbones.efficientnet_lite import EfficientNetLite
    from imret.local.extract import receptive_field_centres

    lite = Backbone(EfficientNetLite("lite0"), "stage5", (127.0,) * 3, (128.0,) * 3)
    # the stem and the first blocks of stages 2, 3 and 4 halve the map, all 'SAME'-padded
    assert lite.strided_layers() == [(3, 2, None), (3, 2, None), (5, 2, None), (3, 2, None)]
    # rows of a 63-px image: sizes 63 → 32 → 16 → 8 → 4; padding before 1, 0, 1, 0 →
    # c → 2c + 1 → 2c + 1 → 2c + 1 → 2c: 16c + 14. Columns of 96 px: 0, 0, 1, 0 → 16c + 15
    ys, xs = receptive_field_centres(lite, (63, 96), (4, 6))
    np.testing.assert_allclose(ys, [14, 30, 46, 62])
    np.testing.assert_allclose(xs, [15, 31, 47, 63, 79, 95])


def test_load_crops_to_the_box_and_keeps_the_pixel_limit(tmp_path):
    from types import SimpleNamespace

    from PIL import Image as PILImage

    from imret.io.images import ImageLoadError
    from imret.local.extract import LocalExtractor

    img = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    path = tmp_path / "p.png"
    PILImage.fromarray(img).save(path)
    fake = SimpleNamespace(max_pixels=24)
    np.testing.assert_array_equal(LocalExtractor.load(fake, path), img)
    # bbox (x0, y0, x1, y1) = (1, 1, 3, 4): rows 1–3, columns 1–2
    np.testing.assert_array_equal(LocalExtractor.load(fake, path, bbox=(1, 1, 3, 4)), img[1:4, 1:3])
    with pytest.raises(ImageLoadError, match="exceeds the limit"):
        LocalExtractor.load(SimpleNamespace(max_pixels=23), path)
