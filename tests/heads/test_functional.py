import math

import pytest
import torch

from imret.config import ConfigError, HeadConfig
from imret.heads import HEADS, build_head
from imret.heads import functional as Fn


@pytest.fixture
def fmap():
    torch.manual_seed(0)
    return torch.relu(torch.randn(2, 8, 6, 9))


def test_gem_limits(fmap):
    assert torch.allclose(Fn.gem(fmap, p=1.0), Fn.spoc(fmap.clamp(min=1e-6)), atol=1e-6)
    assert torch.allclose(Fn.gem(fmap, p=200.0), Fn.mac(fmap), rtol=0.05)
    # p between: between average and max, per channel
    g = Fn.gem(fmap, p=3.0)
    assert (g <= Fn.mac(fmap) + 1e-6).all() and (g >= Fn.spoc(fmap) - 1e-6).all()


def test_mac_and_spoc_by_hand():
    x = torch.zeros(1, 2, 2, 2)
    x[0, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    x[0, 1] = torch.tensor([[0.0, 0.0], [0.0, 8.0]])
    assert Fn.mac(x).tolist() == [[4.0, 8.0]]
    assert Fn.spoc(x).tolist() == [[2.5, 2.0]]


def test_spoc_center_prior_prefers_the_centre():
    x = torch.zeros(1, 2, 9, 9)
    x[0, 0, 4, 4] = 1.0  # centre
    x[0, 1, 0, 0] = 1.0  # corner
    v = Fn.spoc(x, center_prior=True)[0]
    assert v[0] > 5 * v[1]


def test_rmac_region_grid():
    # the cirtorch/revisitop grid (``rmac`` of cirtorch's pooling), worked out by hand for a
    # 6×9 map, L = 3. Short side 6; b = 3/(steps−1) = 3, 1.5, 1, …: overlaps 1 − b/6 = 0.5,
    # 0.75, … → the first (closest to 0.4): one extra column. Level 1: side ⌊12/2⌋ = 6, half
    # ⌊6/2 − 1⌋ = 2; 2 columns, step (9−6)/1 = 3 → ⌊2 + 0⌋ − 2 = 0, ⌊2 + 3⌋ − 2 = 3; one row at 0.
    # Level 2: side 4, half 1; 3 columns, step 5/2 → ⌊1⌋−1, ⌊3.5⌋−1, ⌊6⌋−1 = 0, 2, 5; 2 rows,
    # step 2 → 0, 2. Level 3: side 3, half 0; 4 columns, step 2 → 0, 2, 4, 6; 3 rows, step 1.5 →
    # 0, 1, 3.
    expected = [(0, 0, 6, 9), (0, 0, 6, 6), (0, 3, 6, 6)]
    expected += [(t, l, 4, 4) for t in (0, 2) for l in (0, 2, 5)]
    expected += [(t, l, 3, 3) for t in (0, 1, 3) for l in (0, 2, 4, 6)]
    assert Fn.rmac_regions(6, 9, levels=3) == expected
    # fewer levels: the first levels of the same grid
    assert Fn.rmac_regions(6, 9, levels=2) == expected[:9]


def test_rmac_is_sum_of_normalised_region_macs(fmap):
    regions = Fn.rmac_regions(6, 9, 3)
    ref = torch.zeros(2, 8)
    for t, l, h, w in regions:
        v = fmap[:, :, t:t + h, l:l + w].amax((2, 3))
        ref += v / (v.norm(dim=1, keepdim=True) + 1e-6)
    assert torch.allclose(Fn.rmac(fmap, 3), ref, atol=1e-5)


def test_crow_by_hand():
    x = torch.zeros(1, 2, 2, 2)
    x[0, 0] = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    x[0, 1] = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    s = x.sum(1)[0]  # [[1,0],[0,3]]
    z = math.sqrt(1 + 9)
    spatial = (s / z).sqrt()
    q = torch.tensor([0.5, 0.25])
    omega = torch.log(q.sum() / q)
    expect = torch.stack([(x[0, c] * spatial).sum() for c in range(2)]) * omega
    assert torch.allclose(Fn.crow(x)[0], expect, atol=1e-4)
    # the sparser channel gets the larger weight
    assert omega[1] > omega[0]


@pytest.mark.parametrize("name", ["spoc", "mac", "gem", "rmac", "crow"])
def test_modules_wrap_functions(name, fmap):
    head = build_head(HeadConfig(name), 8)
    out = head(fmap)
    assert out.shape == (2, 8) and head.out_dim == 8
    fn = {"spoc": Fn.spoc, "mac": Fn.mac, "gem": Fn.gem, "rmac": Fn.rmac, "crow": Fn.crow}[name]
    assert torch.allclose(out, fn(fmap), atol=1e-6)


def test_learned_gem_p_gets_gradient(fmap):
    head = build_head(HeadConfig("gem", {"p": 3.0, "learn_p": True}), 8)
    head(fmap).sum().backward()
    assert head.p.grad is not None and head.p.grad.abs() > 0
    fixed = build_head(HeadConfig("gem", {"p": 3.0}), 8)
    assert not fixed.p.requires_grad


def test_head_config_rejects_unknown_params_and_names():
    with pytest.raises(ConfigError, match="unknown parameters"):
        HeadConfig("gem", {"q": 2})
    with pytest.raises(ConfigError, match="unknown head"):
        HeadConfig("nope")
    assert {"spoc", "mac", "gem", "rmac", "crow"} <= set(HEADS.names())
