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
    assert Fn.rmac_regions(8, 8) == expected  # L = 3 by default (a fourth level would add 3×3 squares)


def test_rmac_grid_of_a_very_long_map_stops_at_six_extra_regions():
    # 2×20: b = 18/(steps − 1) for steps 2…7 (cirtorch's): overlaps 1 − b/2 = −8, …, −0.5 (steps 7);
    # none reaches 0.4, the closest is the last: 6 extra columns. Level 1: side 2, 7 columns,
    # step 18/6 = 3 (a step 8 would give 8 columns)
    assert Fn.rmac_regions(2, 20, levels=1) == [(0, 0, 2, 20)] + [(0, l, 2, 2) for l in range(0, 19, 3)]


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


def test_spoc_centre_prior_by_hand():
    # 3×3: offsets −1, 0, 1 both ways, σ = 3/3 = 1: weights exp(−(y² + x²)/2): 1 at the centre,
    # e^−½ on the edges, e^−1 in the corners; S = 1 + 4e^−½ + 4e^−1
    x = torch.zeros(1, 3, 3, 3)
    x[0, 0, 1, 1] = 1.0
    x[0, 1, 0, 0] = 1.0
    x[0, 2] = 1.0
    s = 1 + 4 * math.exp(-0.5) + 4 * math.exp(-1)
    torch.testing.assert_close(Fn.spoc(x, center_prior=True), torch.tensor([[1 / s, math.exp(-1) / s, 1.0]]),
                               atol=1e-6, rtol=0)
    # 2×4: offsets y ±½, x ±½, ±1.5; σ = min(2, 4)/3 = 2/3, 2σ² = 8/9: inner weights
    # exp(−0.5·9/8) = e^−0.5625, outer exp(−2.5·9/8) = e^−2.8125; S = 4e^−0.5625 + 4e^−2.8125
    x = torch.zeros(1, 2, 2, 4)
    x[0, 0, 0, 0] = 1.0  # an outer column
    x[0, 1, 1, 2] = 1.0  # an inner one
    inner, outer = math.exp(-0.5625), math.exp(-2.8125)
    s = 4 * inner + 4 * outer
    torch.testing.assert_close(Fn.spoc(x, center_prior=True), torch.tensor([[outer / s, inner / s]]),
                               atol=1e-6, rtol=0)


def test_gem_with_a_mask_by_hand():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[5.0, 0.0], [0.0, 1.0]]]])
    mask = torch.tensor([[[[True, False], [False, True]]]])
    # kept positions (0, 0) and (1, 1): ((1³ + 4³)/2)^⅓ = 32.5^⅓, ((5³ + 1³)/2)^⅓ = 63^⅓
    torch.testing.assert_close(Fn.gem(x, p=3.0, mask=mask), torch.tensor([[32.5 ** (1 / 3), 63 ** (1 / 3)]]),
                               atol=1e-5, rtol=0)
    # p = 1 over the mask: the mean of the kept positions
    torch.testing.assert_close(Fn.gem(x, p=1.0, mask=mask), torch.tensor([[2.5, 3.0]]), atol=1e-5, rtol=0)
    # nothing kept: 0
    none = torch.zeros_like(mask)
    torch.testing.assert_close(Fn.gem(x, p=3.0, mask=none), torch.zeros(1, 2), atol=1e-6, rtol=0)


def test_gem_clamps_negatives_and_takes_a_tensor_p():
    x = torch.tensor([[[[-1.0, 2.0]]]])
    # −1 → ε: p = 3 gives ((ε³ + 8)/2)^⅓ = 4^⅓; p = 1 gives (ε + 2)/2
    torch.testing.assert_close(Fn.gem(x, p=3.0), torch.tensor([[4 ** (1 / 3)]]), atol=1e-5, rtol=0)
    torch.testing.assert_close(Fn.gem(x, p=1.0), torch.tensor([[1.0]]), atol=1e-5, rtol=0)
    y = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    torch.testing.assert_close(Fn.gem(y, p=torch.tensor(2.0)), torch.tensor([[math.sqrt(7.5)]]), atol=1e-5, rtol=0)


def test_region_descriptors_take_the_pooling():
    x = torch.tensor([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]])
    regions = [(0, 0, 2, 2), (0, 1, 1, 2), (1, 2, 1, 1)]
    assert Fn.region_descriptors(x, regions).tolist() == [[[5.0], [3.0], [6.0]]]
    assert Fn.region_descriptors(x, regions, pool=Fn.spoc).tolist() == [[[3.0], [2.5], [6.0]]]


def test_crow_exponents_by_hand():
    # channel sums s = (1, 3); non-zero fractions (½, ½) → channel weights log(1/½) = log 2
    x = torch.tensor([[[[1.0, 0.0]], [[0.0, 3.0]]]])
    log2 = math.log(2)
    # a = 1, b = 1: spatial s/Σs = (¼, ¾) → (1·¼, 3·¾)·log 2
    torch.testing.assert_close(Fn.crow(x, a=1.0, b=1.0), torch.tensor([[0.25 * log2, 2.25 * log2]]),
                               atol=1e-5, rtol=0)
    # a = 1, b = 2: (s/Σs)^½ = (½, √3/2)
    torch.testing.assert_close(Fn.crow(x, a=1.0, b=2.0), torch.tensor([[0.5 * log2, 1.5 * math.sqrt(3) * log2]]),
                               atol=1e-5, rtol=0)
    # a = 2, b = 1: s/‖s‖₂ = (1, 3)/√10
    r10 = math.sqrt(10)
    torch.testing.assert_close(Fn.crow(x, a=2.0, b=1.0), torch.tensor([[log2 / r10, 9 * log2 / r10]]),
                               atol=1e-5, rtol=0)


def test_max_mask_share_threshold_by_hand():
    # 2×2 positions p0…p3, five channels: two peak at p1, one at p2, one at p3, one is zero
    # everywhere (its argmax, p0, gets no vote). Votes: (0, 2, 1, 1); live channels 4
    x = torch.zeros(2, 5, 2, 2)
    x[0, 0, 0, 1] = x[0, 1, 0, 1] = 1.0
    x[0, 2, 1, 0] = 2.0
    x[0, 3, 1, 1] = 3.0
    x[0, 2, 0, 1] = 0.5  # not channel 2's maximum: no vote
    x[1, 0, 1, 1] = 1.0  # the second image: one live channel, its vote at p3

    def kept(votes):
        return Fn.max_mask(x, votes)[0, 0].flatten().tolist()
    assert kept(0.0) == [False, True, True, True]
    assert Fn.max_mask(x)[0, 0].flatten().tolist() == kept(0.0)  # votes = 0 by default
    # share votes·4/4: 0.9 keeps counts above 0.9 (a share of the 5 channels, 1.125, would not)
    assert kept(0.9) == [False, True, True, True]
    assert kept(1.0) == [False, True, False, False]  # more than 1 vote, not 1
    assert kept(3.0) == [False, True, False, False]  # none above 3: the most-voted position
    # each image's share counts its own live channels: the second's one channel, 0.9·1/4
    assert Fn.max_mask(x, 0.9)[1, 0].flatten().tolist() == [False, False, False, True]
    # an image without a live channel: every position (all tied at 0) is kept
    assert Fn.max_mask(torch.zeros(1, 2, 2, 2), 1.0).all()
    # a tie for the most votes keeps both
    y = torch.zeros(1, 2, 1, 3)
    y[0, 0, 0, 0] = y[0, 1, 0, 2] = 1.0
    assert Fn.max_mask(y, 5.0)[0, 0, 0].tolist() == [True, False, True]


def test_l2n_normalises_the_last_axis_with_an_additive_eps():
    torch.testing.assert_close(Fn.l2n(torch.tensor([[3.0, 4.0], [0.0, 2.0]])), torch.tensor([[0.6, 0.8], [0.0, 1.0]]),
                               atol=1e-6, rtol=0)
    # B×R×C: each region row on its own
    torch.testing.assert_close(Fn.l2n(torch.tensor([[[3.0, 4.0], [0.0, 2.0]]])),
                               torch.tensor([[[0.6, 0.8], [0.0, 1.0]]]), atol=1e-6, rtol=0)
    # a row of norm ε comes out at half length: x/(‖x‖ + ε)
    torch.testing.assert_close(Fn.l2n(torch.tensor([[1e-6, 0.0]])), torch.tensor([[0.5, 0.0]]), atol=1e-6, rtol=0)


def test_self_similarity_windows_by_hand():
    # a 1×3 map of (1, 0), (1, 1), (0, 1): cosines with the neighbours at offsets −2…2 of a 5×5
    # window (the default); only the middle row of the window lies on the map
    x = torch.tensor([[[[1.0, 1.0, 0.0]], [[0.0, 1.0, 1.0]]]])
    s = Fn.self_similarity(x)
    assert s.shape == (1, 25, 1, 3)
    h = 1 / math.sqrt(2)
    expected = torch.zeros(25, 3)
    expected[10:15, 0] = torch.tensor([0, 0, 1, h, 0])
    expected[10:15, 1] = torch.tensor([0, h, 1, h, 0])
    expected[10:15, 2] = torch.tensor([0, h, 1, 0, 0])
    torch.testing.assert_close(s[0, :, 0], expected, atol=1e-6, rtol=0)
    # window 1: each location with itself
    torch.testing.assert_close(Fn.self_similarity(x, window=1), torch.ones(1, 1, 1, 3), atol=1e-6, rtol=0)
    for bad in (0, -1, 4):
        with pytest.raises(ValueError, match="odd and positive"):
            Fn.self_similarity(x, window=bad)


def test_rmac_default_three_levels_on_a_2x2_map_by_hand():
    # 2×2, L = 3. Level 1: one 2×2; level 2: side ⌊4/3⌋ = 1, half ⌊½ − 1⌋ = −1, 2 starts step 1 →
    # 0, 1; level 3: side 1, half −1, 3 starts step ½ → ⌊−1⌋+1, ⌊−½⌋+1, ⌊0⌋+1 = 0, 0, 1
    grid = [(0, 0, 2, 2), (0, 0, 2, 2)] + [(t, l, 1, 1) for t in (0, 1) for l in (0, 1)]
    grid += [(t, l, 1, 1) for t in (0, 0, 1) for l in (0, 0, 1)]
    assert Fn.rmac_regions(2, 2) == grid
    x = torch.zeros(1, 2, 2, 2)
    x[0, 0, 0, 0], x[0, 1, 1, 1] = 3.0, 4.0
    # two whole-map MACs (3, 4)/5; single cells: (0, 0) → (1, 0), (1, 1) → (0, 1), the others 0.
    # L = 2: 2·(0.6, 0.8) + (1, 0) + (0, 1) = (2.2, 2.6); L = 3 adds 4·(1, 0) + (0, 1): (6.2, 3.6)
    torch.testing.assert_close(Fn.rmac(x, levels=2), torch.tensor([[2.2, 2.6]]), atol=1e-5, rtol=0)
    torch.testing.assert_close(Fn.rmac(x), torch.tensor([[6.2, 3.6]]), atol=1e-5, rtol=0)


def test_gem_default_p_is_3():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    torch.testing.assert_close(Fn.gem(x), torch.tensor([[25 ** (1 / 3)]]), atol=1e-5, rtol=0)


def test_netvlad_bias_by_hand():
    x = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # descriptors (1, 0) and (0, 1)
    centroids = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    weight, bias = torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([0.0, 1.0])
    # logits: (1, 0) → (1, 1): assignments (½, ½); (0, 1) → (0, 1): (1 − a, a), a = e/(1 + e)
    a = math.e / (1 + math.e)
    v0 = torch.tensor([0.5, 1 - a])  # ½·(1, 0) + (1 − a)·(0, 1) − (…)·(0, 0)
    v1 = torch.tensor([0.5, a]) - (0.5 + a) * torch.tensor([1.0, 1.0])
    expected = torch.stack([v0 / v0.norm(), v1 / v1.norm()])[None]
    torch.testing.assert_close(Fn.netvlad(x, centroids, weight, bias), expected, atol=1e-5, rtol=0)


def test_gem_with_a_mask_of_one_position_is_that_position():
    # one kept position: the mean runs over 1 position, so GeM returns its values (any p)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]]])
    mask = torch.tensor([[[[False, False], [True, False]]]])
    torch.testing.assert_close(Fn.gem(x, p=3.0, mask=mask), torch.tensor([[3.0, 7.0]]), atol=1e-5, rtol=0)


def test_crow_of_a_channel_that_is_never_positive_and_of_an_empty_map_is_zero():
    # q = (½, 1, 0): channel 2 is zero everywhere, its weight log(1.5 / ε) large but finite, its sum 0
    x = torch.tensor([[[[2.0, 0.0]], [[1.0, 1.0]], [[0.0, 0.0]]]])
    spatial = (torch.tensor([3.0, 1.0]) / math.sqrt(10)).sqrt()
    expected = torch.stack([(x[0, 0, 0] * spatial).sum() * math.log(3.0),
                            (x[0, 1, 0] * spatial).sum() * math.log(1.5), torch.tensor(0.0)])[None]
    out = Fn.crow(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(Fn.crow(torch.zeros(1, 2, 2, 2)), torch.zeros(1, 2))


@pytest.mark.parametrize("window", [0, 4, -3])
def test_self_similarity_rejects_an_even_or_non_positive_window(window):
    with pytest.raises(ValueError, match=f"self-similarity window must be odd and positive, got {window}$"):
        Fn.self_similarity(torch.ones(1, 2, 3, 3), window)
