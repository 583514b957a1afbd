"""Every head's exact output on a tiny map (2–4 channels, 3×3 or 3×4), computed by hand.

Each test sets the head's weights to small chosen values and compares its output
with the paper's formula written out in plain numpy, so that a changed formula
(ReLU for tanh, spatial attention without its global context, NetVLAD's softmax
over locations instead of clusters, SE pooling by max instead of mean, …) fails.
"""
import math

import numpy as np
import pytest
import torch

from imret.config import HeadConfig
from imret.heads import build_head
from imret.heads import functional as Fn
from imret.heads.common import EPS
from imret.heads.netvlad import ATTENTION


def softplus(z):
    return np.log1p(np.exp(z))


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def gem(a, p=3.0):  # C×N positions → C
    return np.mean(a ** p, axis=1) ** (1 / p)


def l2n(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# 2 channels, 3×3: channel 0 peaks top-left, channel 1 bottom-right
X = np.array([[[4.0, 1.0, 0.5], [1.0, 0.5, 0.2], [0.5, 0.2, 0.1]],
              [[0.1, 0.2, 0.5], [0.2, 0.5, 1.0], [0.5, 1.0, 3.0]]], np.float32)


def t(a):
    return torch.tensor(a, dtype=torch.float32)


def setp(param, value):
    with torch.no_grad():
        param.copy_(t(np.asarray(value, np.float32)).view_as(param))


def test_regional_attention_weights_and_descriptor_by_hand():
    x = np.concatenate([X, X[:, :, :1] * 0.5], 2)  # 2×3×4: R-MAC gives the whole map + two 3×3 squares
    head = build_head(HeadConfig("regional", {"levels": 1, "hidden": 2}), 2)
    wr = np.array([[1.0, -2.0, 0.5, 0.5], [-1.0, 1.0, -1.0, 2.0]])
    br = np.array([-0.5, 0.2])
    wc, bc = np.array([[1.5, -1.0]]), np.array([0.3])
    setp(head.hidden.weight, wr), setp(head.hidden.bias, br), setp(head.score.weight, wc), setp(head.score.bias, bc)
    boxes = [(0, 0, 3, 4), (0, 0, 3, 3), (0, 1, 3, 3)]
    assert Fn.rmac_regions(3, 4, 1) == boxes
    regions = l2n(np.stack([x[:, r:r + h, c:c + w].max((1, 2)) for r, c, h, w in boxes]))
    glob = l2n(x.max((1, 2)))  # the global feature: the whole map's MAC
    k = np.concatenate([regions, np.repeat(glob[None], 3, 0)], 1)
    weights = softplus(wc @ np.tanh(wr @ k.T + br[:, None]) + bc[:, None])[0] + EPS
    got_regions, got_w = head.regions_and_weights(t(x)[None])
    np.testing.assert_allclose(got_w[0].detach().numpy(), weights, rtol=1e-5)
    np.testing.assert_allclose(got_regions[0].detach().numpy(), regions, rtol=1e-5)
    expect = (weights[:, None] * regions).sum(0) / weights.sum()
    np.testing.assert_allclose(head(t(x)[None])[0].detach().numpy(), expect, rtol=1e-5)
    # the hidden layer's pre-activations are negative for some regions: ReLU would differ
    assert (wr @ k.T + br[:, None] < 0).any()


def test_regional_per_region_pca_whitens_the_training_regions():
    g = torch.Generator().manual_seed(0)
    maps = [torch.relu(torch.randn(1, 4, 3, 4, generator=g)) + 0.01 for _ in range(12)]
    head = build_head(HeadConfig("regional", {"levels": 1, "hidden": 2, "pca": 2}), 4)
    head.init_from_features(maps)
    r = torch.cat([F_normalize(Fn.region_descriptors(m, Fn.rmac_regions(3, 4, 1)))[0] for m in maps])
    y = head.pca(r).detach().double()
    np.testing.assert_allclose(y.mean(0).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(torch.cov(y.T).numpy(), np.eye(2), atol=1e-4)  # whitened
    assert head.out_dim == 2 and head(maps[0]).shape == (1, 2)


def test_regional_pca_regions_are_unit_rows_and_need_more_regions_than_dimensions():
    g = torch.Generator().manual_seed(1)
    maps = [torch.relu(torch.randn(1, 4, 3, 4, generator=g)) + 0.01 for _ in range(12)]
    n_regions = len(Fn.rmac_regions(3, 4, 1))  # 3 on a 3×4 map
    head = build_head(HeadConfig("regional", {"levels": 1, "hidden": 2, "pca": n_regions}), 4)
    head.init_from_features(maps)
    regions, w = head.regions_and_weights(torch.cat(maps[:3]))
    assert regions.shape == (3, n_regions, n_regions)
    np.testing.assert_allclose(regions.norm(dim=-1).detach().numpy(), 1, atol=1e-6)  # each region a unit row
    mean = ((w[..., None] * regions).sum(1) / w.sum(1, keepdim=True)).detach().numpy()
    np.testing.assert_allclose(head(torch.cat(maps[:3])).detach().numpy(), mean, atol=1e-6)
    with pytest.raises(ValueError, match=f"^per-region PCA to {n_regions} dimensions needs more than that many "
                                         f"regions, got {n_regions}$"):
        head.init_from_features(maps[:1])  # as many regions as dimensions: too few


def F_normalize(v):
    return torch.nn.functional.normalize(v, dim=-1)


def _dagf_spatial_by_hand(x, wl, bl, wx, ws, bs):
    """softplus(ws·relu(Wl·x_p + bl + Wx·mean(x)) + bs) per position p, + EPS."""
    c = x.shape[0]
    flat = x.reshape(c, -1)
    ctx = wx @ flat.mean(1)
    hidden = np.maximum(wl @ flat + bl[:, None] + ctx[:, None], 0)
    return (softplus(ws @ hidden + bs[:, None])[0] + EPS).reshape(x.shape[1:])


def _set_dagf_spatial(sp, wl, bl, wx, ws, bs):
    hidden = sp.local.out_channels
    pad = lambda a, rows: np.concatenate([a, np.zeros((rows - a.shape[0],) + a.shape[1:])], 0)  # noqa: E731
    setp(sp.local.weight, pad(wl, hidden)), setp(sp.local.bias, pad(bl, hidden))
    setp(sp.context.weight, pad(wx, hidden))
    setp(sp.score.weight, np.concatenate([ws, np.zeros((1, hidden - ws.shape[1]))], 1)), setp(sp.score.bias, bs)


def test_dagf_spatial_attention_from_global_context_by_hand():
    head = build_head(HeadConfig("dagf", {"channel": False, "scales": 1, "max_mask": False}), 2)
    wl, bl = np.array([[1.0, -1.0], [0.0, 1.0]]), np.array([0.0, -0.5])
    wx = np.array([[-1.0, 2.0], [1.0, -1.0]])  # the context moves the threshold of each hidden unit
    ws, bs = np.array([[1.0, -2.0]]), np.array([0.1])
    _set_dagf_spatial(head.spatial, wl, bl, wx, ws, bs)
    w = _dagf_spatial_by_hand(X, wl, bl, wx, ws, bs)
    got = head.spatial.weights(t(X)[None])[0, 0].detach().numpy()
    np.testing.assert_allclose(got, w, rtol=1e-5)
    no_context = _dagf_spatial_by_hand(X, wl, bl, 0 * wx, ws, bs)
    assert np.abs(no_context - w).max() > 0.1  # the global context matters here
    np.testing.assert_allclose(head(t(X)[None])[0].detach().numpy(), gem((X * w).reshape(2, -1)), rtol=1e-5)


def test_dagf_channel_weights_feed_the_spatial_evaluator_by_hand():
    """Default order channel → spatial: the spatial evaluator scores the channel-weighted
    map, so the channel weights change which positions count (not only a per-channel
    rescale of the output, which whitening would undo)."""
    head = build_head(HeadConfig("dagf", {"scales": 1, "max_mask": False}), 2)
    wl, bl = np.array([[1.0, -1.0], [0.0, 1.0]]), np.array([0.0, -0.5])
    wx, ws, bs = np.zeros((2, 2)), np.array([[1.0, -2.0]]), np.array([0.1])
    _set_dagf_spatial(head.spatial, wl, bl, wx, ws, bs)
    theta = np.array([0.5, -1.0])
    setp(head.channel.theta, theta)
    cw = softplus(theta) + EPS
    xc = X * cw[:, None, None]
    w = _dagf_spatial_by_hand(xc, wl, bl, wx, ws, bs)
    np.testing.assert_allclose(head(t(X)[None])[0].detach().numpy(), gem((xc * w).reshape(2, -1)), rtol=1e-5)
    # the spatial map itself depends on the channel weights
    assert np.abs(w - _dagf_spatial_by_hand(X, wl, bl, wx, ws, bs)).max() > 0.05


def test_dagf_scale_filters_by_hand():
    head = build_head(HeadConfig("dagf", {"spatial": False, "channel": False, "scales": 2, "max_mask": False}), 2)
    setp(head.scales.mix, [0.0, math.log(3.0)])  # softmax → 1/4 identity, 3/4 3×3 mean
    box = np.zeros_like(X)
    for c in range(2):
        for i in range(3):
            for j in range(3):
                box[c, i, j] = X[c, max(0, i - 1):i + 2, max(0, j - 1):j + 2].mean()  # padding not counted
    y = 0.25 * X + 0.75 * box
    np.testing.assert_allclose(head(t(X)[None])[0].detach().numpy(), gem(y.reshape(2, -1)), rtol=1e-5)


def test_max_mask_keeps_positions_with_more_than_a_share_of_the_maxima():
    # 4 channels on 3×3: the uniform share is 4/9 of a channel per position
    x = np.zeros((4, 3, 3), np.float32)
    x[0, 0, 0] = x[1, 0, 0] = 1.0  # two maxima at (0,0)
    x[2, 1, 1] = 1.0  # one at (1,1)
    x[3] = 0.0  # dead: votes for nothing
    assert Fn.max_mask(t(x)[None], 0.0)[0, 0].numpy().sum() == 2  # Do et al.: every argmax position
    # threshold votes·(live channels)/(positions): 1·3/9 keeps both; 4·3/9 = 1.33 keeps (0,0) only
    np.testing.assert_array_equal(Fn.max_mask(t(x)[None], 1.0)[0, 0].numpy(),
                                  [[True, False, False], [False, True, False], [False, False, False]])
    np.testing.assert_array_equal(Fn.max_mask(t(x)[None], 4.0)[0, 0].numpy(),
                                  [[True, False, False], [False, False, False], [False, False, False]])
    # nothing passes: the most-voted position stays
    np.testing.assert_array_equal(Fn.max_mask(t(x)[None], 9.0)[0, 0].numpy(),
                                  Fn.max_mask(t(x)[None], 4.0)[0, 0].numpy())


def test_netvlad_soft_assignment_is_over_clusters_by_hand():
    # 2 channels, 3 locations (1×3 map), 2 clusters; logits chosen so that a softmax over
    # locations would give other weights
    x = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]], np.float32)
    c = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    aw = np.array([[2.0, -1.0], [0.5, 1.0]], np.float32)
    ab = np.array([0.0, -0.5], np.float32)
    logits = aw @ x + ab[:, None]  # K×N
    a = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)  # over clusters, per location
    vlad = np.stack([(a[k][None] * (x - c[k][:, None])).sum(1) for k in range(2)])
    got = Fn.netvlad(t(x)[None, :, None, :], t(c), t(aw), t(ab))[0].numpy()
    np.testing.assert_allclose(got, l2n(vlad), rtol=1e-5)
    wrong = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    wrong_vlad = l2n(np.stack([(wrong[k][None] * (x - c[k][:, None])).sum(1) for k in range(2)]))
    assert np.abs(wrong_vlad - got).max() > 0.05


def _mlp(w1, b1, w2, b2, v):
    return w2 @ np.maximum(w1 @ v + b1, 0) + b2


def test_se_is_the_standard_module_by_hand():
    se = ATTENTION.get("se")(2, 3, 1)  # reduction 1 on 2 channels: a 2-unit bottleneck
    w1, b1 = np.array([[1.0, -1.0], [0.5, 0.5]]), np.array([0.0, -0.2])
    w2, b2 = np.array([[1.0, -1.0], [-2.0, 1.0]]), np.array([0.1, 0.0])
    setp(se.squeeze.weight, w1), setp(se.squeeze.bias, b1), setp(se.excite.weight, w2), setp(se.excite.bias, b2)
    gate = sigmoid(_mlp(w1, b1, w2, b2, X.reshape(2, -1).mean(1)))  # squeeze by the mean
    np.testing.assert_allclose(se(t(X)[None])[0].detach().numpy(), X * gate[:, None, None], rtol=1e-5)
    by_max = sigmoid(_mlp(w1, b1, w2, b2, X.reshape(2, -1).max(1)))
    assert np.abs(by_max - gate).max() > 0.05
    assert ATTENTION.get("se")(1280, 8, 16).squeeze.out_features == 80  # reduction 16


def test_cbam_is_the_standard_module_by_hand():
    cbam = ATTENTION.get("cbam")(2, 3, 1)
    w1, b1 = np.array([[1.0, -1.0], [0.5, 0.5]]), np.array([0.0, -0.2])
    w2, b2 = np.array([[1.0, -1.0], [-2.0, 1.0]]), np.array([0.1, 0.0])
    setp(cbam.mlp[0].weight, w1), setp(cbam.mlp[0].bias, b1), setp(cbam.mlp[2].weight, w2), setp(cbam.mlp[2].bias, b2)
    k = np.zeros((1, 2, 7, 7))
    k[0, 0, 3, 3], k[0, 1, 3, 4], k[0, 0, 2, 3] = 1.0, -0.5, 0.25  # taps: centre (mean), right (max), up (mean)
    setp(cbam.spatial.weight, k), setp(cbam.spatial.bias, [0.2])
    flat = X.reshape(2, -1)
    cw = sigmoid(_mlp(w1, b1, w2, b2, flat.mean(1)) + _mlp(w1, b1, w2, b2, flat.max(1)))
    xc = X * cw[:, None, None]
    mean_c, max_c = xc.mean(0), xc.max(0)
    pad = lambda a: np.pad(a, 1)  # noqa: E731  (zero padding of the 7×7 conv, taps within 1)
    pm, px = pad(mean_c), pad(max_c)
    s = np.array([[pm[i + 1, j + 1] - 0.5 * px[i + 1, j + 2] + 0.25 * pm[i, j + 1] + 0.2 for j in range(3)]
                  for i in range(3)])
    expect = xc * sigmoid(s)[None]
    np.testing.assert_allclose(cbam(t(X)[None])[0].detach().numpy(), expect, rtol=1e-5)


def test_ia_and_icsa_weights_and_placement_by_hand():
    ia = ATTENTION.get("ia")(2, 3, 16)
    theta = np.linspace(-1, 1, 18).reshape(2, 3, 3)
    setp(ia.theta, theta)
    np.testing.assert_allclose(ia(t(X)[None])[0].detach().numpy(), X * (softplus(theta) + EPS), rtol=1e-5)
    icsa = ATTENTION.get("icsa")(2, 3, 16)
    ch, sp = np.array([0.3, -0.7]), np.linspace(-2, 2, 9).reshape(3, 3)
    setp(icsa.channel, ch), setp(icsa.spatial, sp)
    w = (softplus(ch) + EPS)[:, None, None] * (softplus(sp) + EPS)[None]
    np.testing.assert_allclose(icsa(t(X)[None])[0].detach().numpy(), X * w, rtol=1e-5)
    # placement: after the per-location L2 the spatial part stays a location weight; before
    # it, the L2 divides it out again
    for placement, expect in (("after-l2", l2n(X.reshape(2, -1).T).T.reshape(X.shape) * w),
                              ("before-l2", l2n((X * w).reshape(2, -1).T).T.reshape(X.shape)),
                              ("no-l2", X * w)):
        head = build_head(HeadConfig("netvlad", {"attention": "icsa", "clusters": 2, "dim": 0, "size": 3,
                                                 "placement": placement}), 2)
        head.attention.load_state_dict(icsa.state_dict())
        np.testing.assert_allclose(head.weighted(t(X)[None])[0].detach().numpy(), expect, rtol=1e-5)
    spatial_only = l2n((X * (softplus(sp) + EPS)[None]).reshape(2, -1).T).T
    np.testing.assert_allclose(spatial_only, l2n(X.reshape(2, -1).T).T, rtol=1e-5)


def test_self_similarity_embedding_add_fusion_by_hand():
    head = build_head(HeadConfig("selfsim", {"window": 3, "hidden": 1, "channels": 1, "fusion": "add"}), 2)
    with torch.no_grad():
        e1, e2 = head.encode[0], head.encode[2]
        e1.weight.zero_(), e1.bias.zero_(), e2.weight.zero_(), e2.bias.zero_()
        e1.weight[0, 4] = 1.0  # the centre offset: similarity with itself (1 everywhere)
        e1.weight[0, 5] = 2.0  # the right neighbour
        e2.weight[0, 0, 1, 1] = 1.0
        head.fuse.conv.weight.copy_(torch.tensor([[[[0.5]]], [[[-0.25]]]]))
        head.fuse.conv.bias.zero_()
    n = l2n(X.reshape(2, -1).T).T.reshape(X.shape)
    right = np.zeros((3, 3))
    right[:, :2] = (n[:, :, :2] * n[:, :, 1:]).sum(0)
    s = np.maximum(1.0 + 2.0 * right, 0)
    fused = X + np.array([0.5, -0.25])[:, None, None] * s[None]
    np.testing.assert_allclose(head(t(X)[None])[0].detach().numpy(),
                               gem(np.clip(fused, 1e-6, None).reshape(2, -1)), rtol=1e-5)


@pytest.mark.parametrize("name", ["ia", "icsa", "none"])
def test_input_independent_modules_start_as_the_identity(name):
    module = ATTENTION.get(name)(2, 3, 16)
    assert torch.allclose(module(t(X)[None]), t(X)[None])
