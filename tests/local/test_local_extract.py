"""Local-feature extraction: receptive-field centres, attention initialisation, selection."""
import numpy as np
import pytest
import torch

from imret.config import BackboneConfig, ConfigError
from imret.local.attention import Attention
from imret.local.config import DELF_SCALES, LocalConfig, get_local_config
from imret.local.extract import cross_scale_nms, receptive_field_centres


def test_default_config_is_the_delf_pyramid_on_a_stride_16_stage():
    cfg = LocalConfig()
    assert cfg.scales == pytest.approx([0.25, 0.3536, 0.5, 0.7071, 1.0, 1.4142, 2.0], abs=1e-4) == list(DELF_SCALES)
    assert cfg.backbone.stage == "stage5" and cfg.max_features == 1000 and cfg.pca_dim == 40
    assert LocalConfig(backbone=BackboneConfig("resnet50")).backbone.stage == "layer3"  # ResNet's conv4
    assert LocalConfig.from_dict(cfg.to_dict()) == cfg
    for bad in (dict(scales=()), dict(max_features=0), dict(pca_dim=40, pq_m=7), dict(storage="zip"), dict(nms_iou=0)):
        with pytest.raises(ConfigError):
            LocalConfig(**bad)
    with pytest.raises(ConfigError):
        get_local_config("nope")


@pytest.mark.parametrize("hw", [(160, 224), (161, 223)])
def test_keypoints_are_the_centres_of_the_receptive_fields(local_extractor, hw, one_thread):
    """The centre formula (TensorFlow 'SAME' padding, even and odd sizes) against the span of
    input pixels that actually influence a map location (non-zero gradient)."""
    with one_thread():
        _check_centres(local_extractor.backbone, hw)


def _check_centres(bb, hw):
    x = (torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(0)) * 255).requires_grad_()
    fmap = bb(x)
    ys, xs = receptive_field_centres(bb, hw, tuple(fmap.shape[2:]))
    assert bb.stride == 16 and fmap.shape[2:] == (-(-hw[0] // 16), -(-hw[1] // 16))
    for i, j in ((3, 4), (5, 7)):
        g, = torch.autograd.grad(fmap[0, :, i, j].sum(), x, retain_graph=True)
        rows, cols = np.nonzero(g.abs().sum(1)[0].numpy())
        # the support is clipped by the image border: compare with its centre only where it is not
        if rows.min() > 0 and rows.max() < hw[0] - 1:
            assert ys[i] == pytest.approx((rows.min() + rows.max()) / 2, abs=0.5)
        if cols.min() > 0 and cols.max() < hw[1] - 1:
            assert xs[j] == pytest.approx((cols.min() + cols.max()) / 2, abs=0.5)


def test_untrained_attention_scores_features_by_their_norm(local_extractor, photos):
    fmap = local_extractor.backbone(torch.from_numpy(photos["coffee"][:256, :320].copy()).permute(2, 0, 1)
                                    .float()[None]).detach()
    att = Attention(fmap.shape[1])
    scores = att(fmap)[0, 0].detach().numpy().ravel()
    norms = fmap.norm(dim=1)[0].numpy().ravel()
    assert np.corrcoef(scores, norms)[0, 1] > 0.95
    assert np.median(np.abs(scores / norms - 1)) < 0.1
    assert (att(-fmap) >= 0).all()  # softplus


def test_cross_scale_nms_drops_nested_duplicates_at_adjacent_scales_only():
    xy = np.array([[8, 8], [24, 8], [8, 8], [8, 8]], np.float32)
    cell = np.array([16, 16, 16 * 2 ** 0.5, 64], np.float32)  # 0, 1: neighbours; 2: adjacent scale; 3: far scale
    scores = np.array([4, 3, 2, 1], np.float32)
    assert sorted(cross_scale_nms(xy, cell, scores, iou=0.45, limit=10)) == [0, 1, 3]
    assert sorted(cross_scale_nms(xy, cell, scores, iou=1.0, limit=10)) == [0, 1, 2, 3]
    assert list(cross_scale_nms(xy, cell, scores, iou=0.45, limit=2)) == [0, 1]


def test_extraction_keeps_the_best_features_in_the_image(local_extractor, photos, one_thread):
    with one_thread():
        _check_extraction(local_extractor, photos["chelsea"])


def _check_extraction(local_extractor, img):
    f = local_extractor.extract(img)
    cfg = local_extractor.config
    assert 100 < len(f) <= cfg.max_features
    assert f.descriptors.shape == (len(f), local_extractor.dim)
    assert np.allclose(np.linalg.norm(f.descriptors, axis=1), 1, atol=1e-5)
    h, w = img.shape[:2]
    assert f.size == (h, w)
    assert (f.xy >= -1).all() and (f.xy[:, 0] <= w) .all() and (f.xy[:, 1] <= h).all()
    assert set(np.unique(f.scales)) <= set(np.float32(cfg.scales))
    assert np.all(np.diff(f.scores) <= 0)  # best first
    small = local_extractor.__class__(cfg.replace(max_features=50), device="cpu", backbone=local_extractor.backbone)
    g = small.extract(img)
    assert len(g) == 50 and np.allclose(g.scores, f.scores[:50], rtol=1e-4)
    # a crop box gives keypoints in the crop's pixels
    c = local_extractor.extract(img, bbox=(100, 50, 400, 250))
    assert c.size == (200, 300)
