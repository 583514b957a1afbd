"""``adapt``'s blend: the returned head lies a set share of the way from its start to the adapted weights."""
import pytest
import torch

from imret.core.errors import ImretError
from imret.heads import build_head
from imret.presets import get_preset
from imret.training.adapt import ADAPT, adapt, blend


def test_blend_by_hand():
    start = {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(3)}
    adapted = {"w": torch.tensor([4.0, 4.0]), "n": torch.tensor(5)}
    out = blend(start, adapted, 0.25)
    assert torch.equal(out["w"], torch.tensor([1.0, 2.5]))
    assert out["n"].item() == 5  # a counter is not interpolated
    assert torch.equal(blend(start, adapted, 0.0)["w"], start["w"])
    assert torch.equal(blend(start, adapted, 1.0)["w"], adapted["w"])


def test_blend_casts_the_start_to_the_adapted_dtype():
    out = blend({"w": torch.tensor([1.0], dtype=torch.float16)}, {"w": torch.tensor([3.0])}, 0.5)
    assert out["w"].dtype == torch.float32 and out["w"].item() == 2.0


@pytest.mark.parametrize("start, adapted, weight, message", [
    ({"w": torch.zeros(2)}, {"w": torch.zeros(2)}, 1.5, "must lie in"),
    ({"w": torch.zeros(2)}, {"w": torch.zeros(2)}, -0.1, "must lie in"),
    ({"w": torch.zeros(2)}, {"v": torch.zeros(2)}, 0.5, "differ in their keys: ['v', 'w']"),
    ({"w": torch.zeros(2)}, {"w": torch.zeros(3)}, 0.5, "w is (2,) at the start and (3,) adapted"),
])
def test_blend_rejects(start, adapted, weight, message):
    with pytest.raises(ValueError) as err:
        blend(start, adapted, weight)
    assert message in str(err.value)


@pytest.fixture(scope="module")
def small_regional():
    preset = get_preset("lite0-regional")
    return preset.replace(extraction=preset.extraction.replace(max_size=96, min_size=64))


def test_adapt_returns_the_blend_of_its_start_and_the_whole_adapted_head(small_regional, few_photos, one_thread):
    cfg = ADAPT.replace(steps=2, checkpoint_every=2, batch=2, negatives=1, views=2)
    torch.manual_seed(0)
    start = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
             for k, v in build_head(small_regional.head, 1280).state_dict().items()}
    whole = adapt(small_regional, [few_photos], cfg, start=start, blend_weight=1.0).head_state
    half = adapt(small_regional, [few_photos], cfg, start=start, blend_weight=0.5).head_state
    moved = [k for k in whole if whole[k].is_floating_point() and not torch.equal(whole[k], start[k])]
    assert moved  # training changed the head, so the blend below is not trivially the start
    for k in moved:
        torch.testing.assert_close(half[k], (start[k] + whole[k]) / 2)


@pytest.mark.parametrize("weight", [0.0, 1.2])
def test_adapt_rejects_a_blend_weight_outside_0_1_before_training(small_regional, few_photos, weight):
    with pytest.raises(ImretError, match=r"--adapt-blend: expected a weight in \(0, 1\]"):
        adapt(small_regional, [few_photos], blend_weight=weight)
