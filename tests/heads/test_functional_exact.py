"""Exact, hand-computed cases for ``imret.heads.functional`` (tests only: the module belongs
to the head maths work). The R-MAC grid is checked region by region against the grid of
Tolias et al.'s formula (cirtorch's ``rmac``), worked out by hand below."""
import math

import pytest
import torch

from imret.heads import functional as Fn


def test_rmac_grid_of_a_square_map_region_by_region():
    # 8×8, L=3: level 1 one 8×8; level 2 side ⌊16/3⌋=5, half ⌊5/2−1⌋=1, step (8−5)/1=3 →
    # starts ⌊1+0⌋−1=0, ⌊1+3⌋−1=3; level 3 side 4, half 1, step (8−4)/2=2 → starts 0, 2, 4
    expected = [(0, 0, 8, 8), (0, 0, 8, 8)]
    expected += [(t, l, 5, 5) for t in (0, 3) for l in (0, 3)]
    expected += [(t, l, 4, 4) for t in (0, 2, 4) for l in (0, 2, 4)]
    assert Fn.rmac_regions(8, 8, levels=3) == expected


def test_rmac_grid_of_a_wide_map_uses_the_40_percent_overlap():
    # 10×20: b = 10/(steps−1) = 10, 5, 3.33, 2.5, 2, 1.67; overlap 1 − b/10 = 0, .5, .67, .75, .8, .83;
    # closest to 0.4 is 0.5 (index 1) → 2 extra columns. Level 1: side 10, half 4, 3 columns
    # step 5 → 0, 5, 10. Level 2: side 6, half 2, 4 columns step 14/3 → ⌊2⌋−2, ⌊6.67⌋−2,
    # ⌊11.33⌋−2, ⌊16⌋−2 = 0, 4, 9, 14; 2 rows step 4 → 0, 4.
    expected = [(0, 0, 10, 20)] + [(0, l, 10, 10) for l in (0, 5, 10)]
    expected += [(t, l, 6, 6) for t in (0, 4) for l in (0, 4, 9, 14)]
    assert Fn.rmac_regions(10, 20, levels=2) == expected
    # an overlap of 0.8 would pick index 4 (5 extra columns): a different grid
    assert Fn.rmac_regions(10, 20, levels=2, overlap=0.8) != expected
    # tall maps get the extra rows instead
    assert sorted(Fn.rmac_regions(20, 10, levels=2)) == sorted((l, t, w, h) for t, l, h, w in expected)


def test_rmac_by_hand():
    x = torch.zeros(1, 2, 2, 2)
    x[0, 0, 0, 0], x[0, 1, 1, 1] = 3.0, 4.0
    # 2×2, L=1: the whole map twice (level 1 is the whole square): each MAC (3, 4)/5
    assert Fn.rmac_regions(2, 2, levels=1) == [(0, 0, 2, 2), (0, 0, 2, 2)]
    torch.testing.assert_close(Fn.rmac(x, levels=1), torch.tensor([[1.2, 1.6]]), atol=1e-5, rtol=0)


def test_gem_by_hand():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    expected = ((1 + 8 + 27 + 64) / 4) ** (1 / 3)
    torch.testing.assert_close(Fn.gem(x, p=3.0), torch.tensor([[expected]]), atol=1e-5, rtol=0)
    torch.testing.assert_close(Fn.gem(x, p=1.0), torch.tensor([[2.5]]), atol=1e-5, rtol=0)


def test_mac_spoc_and_l2n_by_hand():
    x = torch.tensor([[[[1.0, -2.0], [3.0, 0.5]], [[0.0, 0.0], [0.0, 2.0]]]])
    torch.testing.assert_close(Fn.mac(x), torch.tensor([[3.0, 2.0]]))
    torch.testing.assert_close(Fn.spoc(x), torch.tensor([[2.5 / 4, 0.5]]))
    torch.testing.assert_close(Fn.l2n(torch.tensor([[3.0, 4.0]])), torch.tensor([[0.6, 0.8]]), atol=1e-6, rtol=0)


def test_crow_by_hand_weights():
    # one 1×2 map of two channels: channel sums s = (1, 3); spatial weights (s/‖s‖₂)^½;
    # non-zero fractions q = (1, ½) → channel weights log(1.5/q)
    x = torch.tensor([[[[1.0, 0.0]], [[0.0, 3.0]]]])
    s = torch.tensor([1.0, 3.0])
    spatial = (s / math.sqrt(10)).sqrt()
    q = torch.tensor([0.5, 0.5])
    chan = torch.log(q.sum() / q)
    expected = torch.stack([(x[0, c, 0] * spatial).sum() * chan[c] for c in range(2)])[None]
    torch.testing.assert_close(Fn.crow(x), expected, atol=1e-5, rtol=1e-5)


def test_max_mask_by_hand():
    x = torch.tensor([[[[1.0, 5.0], [2.0, 0.0]], [[7.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    # channel 0 peaks at (0, 1), channel 1 at (0, 0); the all-zero channel votes for nothing
    assert Fn.max_mask(x)[0, 0].tolist() == [[True, True], [False, False]]
    assert Fn.max_mask(torch.zeros(1, 2, 2, 2)).all()  # no live channel: every position kept


def test_self_similarity_by_hand():
    x = torch.tensor([[[[1.0, 1.0]], [[0.0, 1.0]]]])  # 1×2 map: (1, 0) then (1, 1)
    s = Fn.self_similarity(x, window=3)[0]
    assert s.shape == (9, 1, 2)
    expected = torch.zeros(9, 1, 2)
    expected[4] = 1.0  # each location with itself
    expected[5, 0, 0] = expected[3, 0, 1] = 1 / math.sqrt(2)  # right neighbour of the first, left of the second
    torch.testing.assert_close(s, expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError):
        Fn.self_similarity(x, window=2)


def test_netvlad_by_hand():
    x = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # two descriptors (1, 0) and (0, 1)
    centroids = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    weight, bias = torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.zeros(2)
    # soft assignments: (1, 0) → (e, 1)/(1+e) = (.7311, .2689); (0, 1) → (.5, .5)
    # cluster 0: .7311·(1,0) + .5·(0,1) − 1.2311·(0,0) = (.7311, .5); cluster 1: (.2689, .5) − .7689·(1,1)
    a = math.e / (1 + math.e)
    v0 = torch.tensor([a, 0.5])
    v1 = torch.tensor([1 - a, 0.5]) - (1 - a + 0.5) * torch.tensor([1.0, 1.0])
    expected = torch.stack([v0 / v0.norm(), v1 / v1.norm()])[None]
    torch.testing.assert_close(Fn.netvlad(x, centroids, weight, bias), expected, atol=1e-5, rtol=0)
