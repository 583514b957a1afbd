"""Attention heads: shapes, their start state, the parts that can be checked by hand."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imret.config import ConfigError, HeadConfig
from imret.heads import build_head
from imret.heads import functional as Fn
from imret.heads.common import positive
from imret.heads.netvlad import ATTENTION, _kmeans_pp

C = 16

HEAD_CONFIGS = [
    ("dagf", {}),
    ("dagf", {"order": "channel-spatial", "scales": 1, "max_mask": False}),
    ("regional", {"hidden": 8}),
    ("netvlad", {"attention": "none", "clusters": 4, "dim": 8}),
    ("netvlad", {"attention": "ia", "clusters": 4, "dim": 0, "size": 4}),
    ("netvlad", {"attention": "icsa", "clusters": 4, "dim": 8, "size": 4}),
    ("netvlad", {"attention": "se", "clusters": 4, "dim": 8, "reduction": 4}),
    ("netvlad", {"attention": "cbam", "clusters": 4, "dim": 8, "reduction": 4}),
    ("selfsim", {"window": 3, "hidden": 4, "channels": 6}),
    ("selfsim", {"fusion": "add", "window": 5, "hidden": 4, "channels": 6}),
]


def _id(cfg):
    return cfg[0] + "-" + "-".join(f"{k}={v}" for k, v in cfg[1].items())


def fmap(b=2, c=C, h=6, w=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(b, c, h, w, generator=g))


def perturb(module, seed=1, scale=0.5):
    """Move every parameter away from its start, so tests see a trained-like head."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return module


@pytest.mark.parametrize("name,params", HEAD_CONFIGS, ids=map(_id, HEAD_CONFIGS))
@pytest.mark.parametrize("size", [(6, 9), (11, 4), (1, 1)])
def test_shapes_and_every_parameter_learns(name, params, size):
    head = build_head(HeadConfig(name, params), C)
    perturb(head)
    x = fmap(h=size[0], w=size[1]).requires_grad_(True)
    out = head(x)
    assert out.shape == (2, head.out_dim) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    out.pow(2).sum().backward()
    assert x.grad is not None
    no_grad = [n for n, p in head.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters that get no gradient: {no_grad}"


def test_untrained_heads_are_their_base_pooling():
    x = fmap()
    gem = Fn.gem(x, 3.0)
    plain = build_head(HeadConfig("dagf", {"scales": 1, "max_mask": False}), C)
    assert torch.allclose(plain(x), gem, atol=1e-5)
    for fusion in ("concat", "add"):
        ss = build_head(HeadConfig("selfsim", {"fusion": fusion, "hidden": 4, "channels": 6}), C)
        assert torch.allclose(ss(x), gem, atol=1e-5)
    regional = build_head(HeadConfig("regional", {"hidden": 8}), C)
    assert torch.allclose(Fn.l2n(regional(x)), Fn.l2n(Fn.rmac(x)), atol=1e-5)
    # the input-independent modules start as the identity; SE and CBAM are the standard
    # modules (sigmoid gates, default initialisation) and do not
    for name in ("none", "ia", "icsa"):
        module = ATTENTION.get(name)(C, 4, 4)
        assert torch.allclose(module(x), x), name


def test_trained_heads_differ_from_their_start():
    x = fmap()
    for name, params in HEAD_CONFIGS:
        start = build_head(HeadConfig(name, params), C)
        moved = perturb(build_head(HeadConfig(name, params), C))
        assert not torch.allclose(start(x), moved(x), atol=1e-4), (name, params)


def test_max_mask_keeps_exactly_the_argmax_positions():
    x = fmap(b=3, c=7, h=5, w=6, seed=3)
    x[0, 2] = 0  # a dead channel votes for nothing
    x[1, :, 2, 3] = 10  # one position holds every channel's maximum
    mask = Fn.max_mask(x, 0.0)
    assert mask.shape == (3, 1, 5, 6) and mask.dtype == torch.bool
    a = x.numpy()
    for b in range(3):
        expect = np.zeros(30, bool)
        for c in range(7):
            if a[b, c].max() > 0:
                expect[np.argmax(a[b, c])] = True  # numpy: first maximum
        assert (mask[b, 0].numpy().ravel() == expect).all()
    assert mask[1].sum() == 1
    # ties in a channel: only its first maximum counts
    t = torch.zeros(1, 1, 2, 2)
    t[0, 0] = torch.tensor([[0.0, 6.0], [6.0, 6.0]])
    assert Fn.max_mask(t, 0.0)[0, 0].tolist() == [[False, True], [False, False]]
    # nothing alive: nothing to choose, every position stays
    assert Fn.max_mask(torch.zeros(1, 3, 2, 2), 0.0).all()
    assert Fn.max_mask(torch.zeros(1, 3, 2, 2), 1.0).all()


def test_masked_gem_pools_only_the_kept_positions():
    x = fmap(b=1, c=4, h=3, w=3) + 0.1
    mask = torch.zeros(1, 1, 3, 3, dtype=torch.bool)
    mask[0, 0, 0, 1] = mask[0, 0, 2, 2] = True
    kept = torch.stack([x[0, :, 0, 1], x[0, :, 2, 2]], 1)
    by_hand = kept.pow(3).mean(1).pow(1 / 3)
    assert torch.allclose(Fn.gem(x, 3.0, mask=mask)[0], by_hand, atol=1e-5)
    assert torch.allclose(Fn.gem(x, 3.0, mask=torch.ones_like(mask)), Fn.gem(x, 3.0), atol=1e-6)


def test_dagf_mask_changes_the_descriptor_and_order_matters():
    x = fmap()
    on = perturb(build_head(HeadConfig("dagf", {"scales": 1}), C))
    off = build_head(HeadConfig("dagf", {"scales": 1, "max_mask": False}), C)
    off.load_state_dict(on.state_dict())
    assert not torch.allclose(on(x), off(x), atol=1e-4)
    sc = build_head(HeadConfig("dagf", {"order": "spatial-channel"}), C)
    cs = build_head(HeadConfig("dagf", {"order": "channel-spatial"}), C)
    perturb(sc)
    cs.load_state_dict(sc.state_dict())
    assert not torch.allclose(sc(x), cs(x), atol=1e-4)


def test_attention_weights_are_positive():
    x = fmap() * 3
    dagf = perturb(build_head(HeadConfig("dagf"), C), scale=3.0)
    assert (dagf.spatial.weights(x) > 0).all() and (dagf.channel.weights() > 0).all()
    regional = perturb(build_head(HeadConfig("regional", {"hidden": 8}), C), scale=3.0)
    _, w = regional.regions_and_weights(x)
    assert w.shape[0] == 2 and (w > 0).all()
    for name in ("ia", "icsa", "se", "cbam"):
        module = perturb(ATTENTION.get(name)(C, 4, 4), scale=3.0)
        w = module.weights(x)
        if name in ("se", "cbam"):  # standard sigmoid gates: in [0, 1] (they may underflow to 0)
            assert ((w >= 0) & (w <= 1)).all(), name
        else:
            assert (w > 0).all(), name
        assert torch.allclose(module(x), x * w)


def test_input_independent_attention_is_resized_to_the_map():
    ia = ATTENTION.get("ia")(C, 4, 4)
    with torch.no_grad():
        ia.theta.copy_(torch.randn(C, 4, 4))
    # on a map of the learned size the weights are the learned tensor itself
    assert torch.allclose(ia.weights(fmap(h=4, w=4)), positive(ia.theta)[None])
    # elsewhere, its bilinear resize
    w = ia.weights(fmap(h=8, w=12))
    assert w.shape == (1, C, 8, 12)
    assert torch.allclose(w, F.interpolate(positive(ia.theta)[None], size=(8, 12), mode="bilinear",
                                           align_corners=False))
    icsa = perturb(ATTENTION.get("icsa")(C, 4, 4))
    w = icsa.weights(fmap(h=7, w=3))
    assert w.shape == (1, C, 7, 3)
    # a channel vector times one spatial map: the channels' maps are proportional
    assert torch.allclose(w[0, 1] / w[0, 0], (w[0, 1, 0, 0] / w[0, 0, 0, 0]).expand(7, 3), atol=1e-5)


def test_netvlad_is_intra_normalised():
    head = perturb(build_head(HeadConfig("netvlad", {"attention": "icsa", "clusters": 5, "dim": 8, "size": 4}), C))
    v = head.vlad(fmap())
    assert v.shape == (2, 5, 8)
    assert torch.allclose(v.norm(dim=2), torch.ones(2, 5), atol=1e-5)
    assert torch.equal(head(fmap()), v.flatten(1))


def test_netvlad_by_hand():
    x = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # 1×2×1×2: descriptors (1,0) and (0,1)
    centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # hard assignment: each descriptor to its own centroid, residuals 0 → the
    # normalised residual of an empty/zero cluster is 0
    v = Fn.netvlad(x, centroids, 100 * centroids, torch.zeros(2))
    assert torch.allclose(v, torch.zeros(1, 2, 2), atol=1e-6)
    # uniform assignment: residual of cluster k = Σ_i ½(x_i − c_k)
    v = Fn.netvlad(x, centroids, torch.zeros(2, 2), torch.zeros(2))
    r0 = 0.5 * (torch.tensor([1.0, 0.0]) - centroids[0]) + 0.5 * (torch.tensor([0.0, 1.0]) - centroids[0])
    assert torch.allclose(v[0, 0], r0 / r0.norm(), atol=1e-6)


def test_netvlad_init_from_features_is_pca_and_kmeans():
    g = torch.Generator().manual_seed(0)
    # local descriptors from three well-separated groups
    centres = torch.relu(torch.randn(3, C, generator=g)) * 4
    maps = [torch.relu(centres[k % 3][None, :, None, None] + 0.05 * torch.randn(1, C, 3, 3, generator=g))
            for k in range(12)]
    head = build_head(HeadConfig("netvlad", {"clusters": 3, "dim": 4}), C)
    head.init_from_features(maps, seed=0)
    local = torch.cat([head.local_descriptors(m).flatten(2)[0].T for m in maps])
    assert torch.allclose(local.mean(0), torch.zeros(4), atol=1e-4)  # PCA centres
    cov = torch.cov(local.T)
    assert torch.allclose(cov - torch.diag(torch.diag(cov)), torch.zeros(4, 4), atol=1e-3)  # and decorrelates
    # each group falls to one cluster, almost surely
    logits = local @ head.assign_weight.T + head.assign_bias
    hard = logits.argmax(1).view(12, 9)
    assert all(len(set(hard[k].tolist())) == 1 for k in range(12))
    assert len(set(hard[:3, 0].tolist())) == 3
    assert torch.softmax(logits, 1).amax(1).min() > 0.9
    # k-means' fixed point, in the reduced space: each centroid is the mean of its members
    for k in range(3):
        assert torch.allclose(head.centroids[k], local[hard.flatten() == k].mean(0), atol=1e-4)
    # α: the nearest centroid outweighs the second by 100× on average over the training descriptors
    alpha = float(-head.assign_bias[0].detach() / head.centroids[0].detach().pow(2).sum())
    d2 = torch.cdist(local.detach(), head.centroids.detach()).pow(2).sort(1).values
    assert math.isclose(alpha * float((d2[:, 1] - d2[:, 0]).mean()), math.log(100.0), rel_tol=1e-4)


def test_netvlad_clusters_may_come_from_other_maps_than_the_pca():
    g = torch.Generator().manual_seed(1)
    centres = torch.relu(torch.randn(6, C, generator=g)) * 4

    def group_maps(ks):
        return [torch.relu(centres[k][None, :, None, None] + 0.05 * torch.randn(1, C, 3, 3, generator=g))
                for k in ks for _ in range(3)]

    pca_maps, other = group_maps([0, 1, 2]), group_maps([3, 4, 5])
    cfg = HeadConfig("netvlad", {"clusters": 3, "dim": 4})
    alone, mixed = build_head(cfg, C), build_head(cfg, C)
    alone.init_from_features(pca_maps, seed=0)
    mixed.init_from_features(pca_maps, seed=0, cluster_maps=other)
    assert torch.equal(mixed.reduce.weight, alone.reduce.weight) and torch.equal(mixed.reduce.bias, alone.reduce.bias)
    # the clusters are k-means of the other maps' descriptors, reduced by the first maps' PCA
    local = torch.cat([mixed.local_descriptors(m).flatten(2)[0].T for m in other])
    hard = (local @ mixed.assign_weight.T + mixed.assign_bias).argmax(1)
    assert sorted(set(hard.tolist())) == [0, 1, 2]
    for k in range(3):
        assert torch.allclose(mixed.centroids[k], local[hard == k].mean(0), atol=1e-4)
    assert torch.cdist(mixed.centroids, alone.centroids).amin(1).min() > 0.5  # not the first maps' clusters


def test_netvlad_defaults_are_the_presets():
    """The presets name only attention, clusters and dim: the rest are these defaults."""
    head = build_head(HeadConfig("netvlad", {"attention": "ia"}), 256)
    assert head.placement == "after-l2" and head.out_dim == 16 * 128 and head.reduce.out_channels == 128
    assert head.attention.theta.shape == (256, 8, 8)  # size 8
    assert build_head(HeadConfig("netvlad", {"attention": "se"}), 256).attention.squeeze.out_features == 16


def test_regional_and_selfsim_defaults_are_the_presets():
    regional = build_head(HeadConfig("regional", {"levels": 3}), 64)
    assert regional.hidden.out_features == 256 and regional.pca is None
    selfsim = build_head(HeadConfig("selfsim", {"window": 5, "fusion": "add"}), 64)
    assert (selfsim.encode[0].out_channels, selfsim.encode[2].out_channels, selfsim.p) == (32, 64, 3.0)


def test_netvlad_init_subsamples_with_its_own_seed():
    maps = [fmap(b=1, c=4, h=5, w=5, seed=s) for s in range(4)]  # 100 local descriptors
    heads = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)  # the subsample must not depend on the global generator
        head = build_head(HeadConfig("netvlad", {"clusters": 3, "dim": 2}), 4)
        head.init_from_features(maps, seed=5, max_samples=30)
        heads.append(head)
    assert torch.equal(heads[0].centroids, heads[1].centroids)
    assert torch.equal(heads[0].reduce.weight, heads[1].reduce.weight)
    whole = build_head(HeadConfig("netvlad", {"clusters": 3, "dim": 2}), 4)
    whole.init_from_features(maps, seed=5)
    assert not torch.allclose(whole.reduce.bias, heads[0].reduce.bias)  # 30 of 100 give another mean


def test_netvlad_assignment_is_the_soft_nearest_centroid():
    """softmax_k(w_k·x + b_k) with w = 2αc, b = −α|c|² is softmax_k(−α|x − c_k|²)."""
    g = torch.Generator().manual_seed(3)
    head = build_head(HeadConfig("netvlad", {"clusters": 4, "dim": 5}), C)
    centroids, x, alpha = torch.randn(4, 5, generator=g), torch.randn(7, 5, generator=g), 0.7
    head._set_assignment(centroids, alpha)
    assert torch.equal(head.centroids.data, centroids)
    got = torch.softmax(x @ head.assign_weight.T + head.assign_bias, 1)
    assert torch.allclose(got, torch.softmax(-alpha * torch.cdist(x, centroids).pow(2), 1), atol=1e-5)


def test_netvlad_kmeans_needs_as_many_descriptors_as_clusters():
    head = build_head(HeadConfig("netvlad", {"clusters": 9, "dim": 0}), 2)
    one_map = [torch.rand(1, 2, 3, 3, generator=torch.Generator().manual_seed(0)) + 0.1]  # 9 descriptors
    head.init_from_features(one_map)
    small = build_head(HeadConfig("netvlad", {"clusters": 10, "dim": 0}), 2)
    with pytest.raises(ValueError, match="^k-means for 10 clusters needs at least 10 local descriptors, got 9$"):
        small.init_from_features(one_map)


@pytest.mark.parametrize("seed", range(8))
def test_kmeans_pp_seeds_one_per_group_even_at_small_scale(seed):
    """Three tight groups 0.1 apart (total squared distance < 1): every k-means++ seed after
    the first is drawn ∝ squared distance to the nearest seed, so each lands in a new group."""
    rng = np.random.default_rng(100 + seed)
    centres = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1]])
    x = np.concatenate([c + 1e-4 * rng.standard_normal((5, 2)) for c in centres])
    seeds = _kmeans_pp(x, 3, np.random.default_rng(seed))
    assert seeds.shape == (3, 2) and seeds.dtype == np.float32
    groups = {int(np.argmin(((centres - s) ** 2).sum(1))) for s in seeds}
    assert groups == {0, 1, 2}


def test_se_and_cbam_bottleneck_is_c_over_reduction_at_least_one():
    assert ATTENTION.get("se")(16, 4, 16).squeeze.out_features == 1
    assert ATTENTION.get("se")(64, 4, 16).squeeze.out_features == 4
    assert ATTENTION.get("cbam")(16, 4, 16).mlp[0].out_features == 1


def test_self_similarity_by_hand():
    x = torch.ones(1, 3, 2, 2)
    s = Fn.self_similarity(x, 3)
    assert s.shape == (1, 9, 2, 2)
    # offset (dy, dx) is channel 3·(dy+1)+(dx+1); neighbours off the map give 0
    assert torch.allclose(s[0, 4], torch.ones(2, 2))
    # up-left exists only for the bottom-right
    assert torch.allclose(s[0, 0], torch.tensor([[0.0, 0.0], [0.0, 1.0]]))
    y = torch.zeros(1, 2, 1, 2)
    y[0, 0, 0, 0] = 1.0
    y[0, 1, 0, 1] = 2.0  # orthogonal neighbours
    assert Fn.self_similarity(y, 3)[0, 5, 0, 0] == 0.0
    with pytest.raises(ValueError):
        Fn.self_similarity(x, 4)


def test_building_a_head_is_deterministic_and_leaves_the_global_rng_alone():
    cfg = HeadConfig("netvlad", {"attention": "se", "clusters": 4, "dim": 8})
    torch.manual_seed(123)
    expect_next = torch.rand(1)
    torch.manual_seed(123)
    a = build_head(cfg, C).state_dict()
    assert torch.equal(torch.rand(1), expect_next)
    b = build_head(cfg, C).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name,params,match", [
    ("dagf", {"order": "sideways"}, "order"),
    ("dagf", {"scales": 0}, "scales"),
    ("dagf", {"spatial": "yes"}, "true or false"),
    ("dagf", {"mask_votes": -0.5}, "head 'dagf': mask_votes must be >= 0, got -0.5$"),
    ("dagf", {"order": "x"}, r"head 'dagf': order must be one of \['channel-spatial', 'spatial-channel'\], got 'x'$"),
    ("dagf", {"max_mask": 1}, "head 'dagf': spatial, channel and max_mask must be true or false$"),
    ("dagf", {"scales": 7}, r"head 'dagf': scales must be an integer in \[1, 6\] \(1: no scale filters\), got 7$"),
    ("dagf", {"p": 0}, "head 'dagf': p must be positive, got 0$"),
    ("dagf", {"reduction": 0}, "head 'dagf': reduction must be a positive integer, got 0$"),
    ("regional", {"levels": 9}, "levels"),
    ("regional", {"levels": 7}, r"head 'regional': levels must be an integer in \[1, 6\], got 7"),
    ("regional", {"levels": 0}, r"levels must be an integer in \[1, 6\], got 0"),
    ("regional", {"hidden": 0}, "head 'regional': hidden must be a positive integer, got 0"),
    ("regional", {"pca": -1}, r"head 'regional': pca must be a non-negative integer \(0: no per-region PCA\), got -1"),
    ("netvlad", {"attention": "transformer"}, "unknown attention"),
    ("netvlad", {"placement": "middle"},
     r"head 'netvlad': placement must be one of \['after-l2', 'before-l2', 'no-l2'\], got 'middle'$"),
    ("netvlad", {"attention": "x"}, "head 'netvlad': unknown attention module 'x'; known: cbam, ia, icsa, none, se$"),
    ("netvlad", {"clusters": 0}, "head 'netvlad': clusters must be an integer >= 1, got 0$"),
    ("netvlad", {"size": 0}, "head 'netvlad': size must be an integer >= 1, got 0$"),
    ("netvlad", {"reduction": 0}, "head 'netvlad': reduction must be an integer >= 1, got 0$"),
    ("netvlad", {"dim": -1}, "head 'netvlad': dim must be an integer >= 0, got -1$"),
    ("selfsim", {"window": 4}, "odd"),
    ("selfsim", {"window": 1}, "head 'selfsim': window must be an odd integer >= 3, got 1"),
    ("selfsim", {"hidden": 0}, "head 'selfsim': hidden must be a positive integer, got 0"),
    ("selfsim", {"channels": 0}, "head 'selfsim': channels must be a positive integer, got 0"),
    ("selfsim", {"fusion": "multiply"}, "head 'selfsim': unknown fusion 'multiply'; known: add, concat$"),
    ("selfsim", {"p": 0}, "head 'selfsim': p must be positive, got 0$"),
])
def test_head_parameters_are_validated_in_the_config(name, params, match):
    with pytest.raises(ConfigError, match=match):
        HeadConfig(name, params)


def test_parameters_accept_their_bounds():
    HeadConfig("regional", {"levels": 6, "hidden": 1, "pca": 0})
    HeadConfig("regional", {"levels": 1})
    HeadConfig("selfsim", {"window": 3, "hidden": 1, "channels": 1, "p": 0.5})
    HeadConfig("dagf", {"mask_votes": 0, "scales": 6, "p": 0.5, "reduction": 1})
    HeadConfig("dagf", {"scales": 1})
    HeadConfig("netvlad", {"clusters": 1, "size": 1, "reduction": 1, "dim": 0})


def test_dagf_defaults_are_the_full_head():
    """No parameters: channel weights then context spatial attention, three scale filters
    (sizes 1, 3, 5), MAX-mask at one vote, GeM p=3, spatial hidden width C/16 (at least 8)."""
    head = build_head(HeadConfig("dagf"), 256)
    assert head.cascade == ("channel", "spatial")
    assert head.scales.sizes == (1, 3, 5)
    assert head.max_mask is True and head.mask_votes == 1.0 and head.p == 3.0
    assert head.spatial.local.out_channels == 16 and head.spatial.context.out_features == 16
    assert build_head(HeadConfig("dagf"), 64).spatial.local.out_channels == 8
    assert build_head(HeadConfig("dagf", {"scales": 1}), 4).scales is None  # 1: no scale filters
