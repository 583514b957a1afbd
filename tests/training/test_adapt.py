"""``adapt``'s blend: the returned head lies a set share of the way from its start to the adapted weights."""
import os
import shutil

import pytest
import torch

from imret.config import HeadConfig
from imret.core.errors import ImretError
from imret.heads import build_head
from imret.heads.trained import shipped_for
from imret.presets import get_preset
from imret.training import TrainConfig
from imret.training.adapt import ADAPT, ADAPT_BLEND, adapt, average_states, blend
from imret.training.recipes import adapt_config


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
    ({"w": torch.zeros(2)}, {"w": torch.zeros(3)}, 0.5, "w is (2,) in one state and (3,) in another"),
])
def test_blend_rejects(start, adapted, weight, message):
    with pytest.raises(ValueError) as err:
        blend(start, adapted, weight)
    assert message in str(err.value)


def test_average_states_by_hand():
    a = {"w": torch.tensor([1.0, 4.0]), "n": torch.tensor(7)}
    b = {"w": torch.tensor([3.0, 0.0]), "n": torch.tensor(9)}
    c = {"w": torch.tensor([5.0, 2.0]), "n": torch.tensor(1)}
    out = average_states([a, b, c])
    assert torch.equal(out["w"], torch.tensor([3.0, 2.0]))
    assert out["n"].item() == 7  # counters from the first state, not averaged
    assert torch.equal(average_states([b])["w"], b["w"])


def test_average_states_keeps_the_first_dtype_and_averages_in_float32():
    half = {"w": torch.tensor([1.0, 60000.0], dtype=torch.float16)}
    out = average_states([half, {"w": torch.tensor([2.0, 61024.0], dtype=torch.float16)}])
    assert out["w"].dtype == torch.float16
    assert out["w"].tolist() == [1.5, 60512.0]  # summed in float16, 121024 overflows to inf


@pytest.mark.parametrize("states, message", [
    ([], "no state to average"),
    ([{"w": torch.zeros(2)}, {"v": torch.zeros(2)}], "differ in their keys: ['v', 'w']"),
    ([{"w": torch.zeros(2)}, {"w": torch.zeros(2)}, {"w": torch.zeros(3)}], "w is (2,) in one state and (3,)"),
])
def test_average_states_rejects(states, message):
    with pytest.raises(ValueError) as err:
        average_states(states)
    assert message in str(err.value)


# seconds, not minutes (mining is tested in test_mine.py and through 'imret index --adapt')
QUICK = ADAPT.replace(steps=2, checkpoint_every=2, batch=2, negatives=1, views=2, mine=False)


@pytest.fixture(scope="module")
def small_regional():
    preset = get_preset("lite0-regional")
    return preset.replace(extraction=preset.extraction.replace(max_size=96, min_size=64))


def test_adapt_returns_the_blend_of_its_start_and_the_whole_adapted_head(small_regional, few_photos, one_thread):
    torch.manual_seed(0)
    start = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
             for k, v in build_head(small_regional.head, 1280).state_dict().items()}
    whole = adapt(small_regional, [few_photos], QUICK, start=start, blend_weight=1.0).head_state
    half = adapt(small_regional, [few_photos], QUICK, start=start, blend_weight=0.5).head_state
    moved = [k for k in whole if whole[k].is_floating_point() and not torch.equal(whole[k], start[k])]
    assert moved  # training changed the head, so the blend below is not trivially the start
    for k in moved:
        torch.testing.assert_close(half[k], (start[k] + whole[k]) / 2)


@pytest.mark.parametrize("weight", [0.0, 1.2])
def test_adapt_rejects_a_blend_weight_outside_0_1_before_training(small_regional, few_photos, weight):
    with pytest.raises(ImretError, match=r"--adapt-blend: expected a weight in \(0, 1\]"):
        adapt(small_regional, [few_photos], blend_weight=weight)


def test_adapt_recipe_and_blend_are_the_documented_ones():
    """The --adapt figures (README, docs/attention-heads.md) were measured with exactly these."""
    assert ADAPT == TrainConfig(mode="unsupervised", loss="triplet", steps=150, batch=8, negatives=4, views=3,
                                refresh_every=50, lr=5e-4, seed=0, checkpoint_every=150, mine=True)
    assert ADAPT_BLEND == 0.5


def test_adapt_config_trains_icsa_at_the_multiple_of_the_rate_its_recipe_trained_it_at():
    # lite0-icsa-netvlad's recipe: lr 1e-3, ICSA's weights 1e-2; --adapt's lr is 5e-4
    icsa = adapt_config("lite0-icsa-netvlad", ADAPT)
    assert icsa.attention_lr == pytest.approx(5e-3, rel=1e-12)
    assert icsa == ADAPT.replace(attention_lr=icsa.attention_lr)  # nothing else changes
    for one_rate in ("lite0-ia-netvlad", "lite0-regional", "a-preset-of-my-own"):
        assert adapt_config(one_rate, ADAPT) is ADAPT
    own = ADAPT.replace(attention_lr=1e-4)
    assert adapt_config("lite0-icsa-netvlad", own) is own  # a rate given is kept


def test_index_adapt_hands_adapt_the_presets_attention_rate(monkeypatch, few_photos, tmp_path):
    from imret import cli
    from imret.training import adapt as adapt_module

    seen = []

    def stop(preset, sources, cfg, **kw):
        seen.append((preset.name, cfg))
        raise ImretError("stopped before training")

    monkeypatch.setattr(adapt_module, "adapt", stop)
    for name, steps in (("lite0-icsa-netvlad", []), ("lite0-ia-netvlad", ["--adapt-steps", "7"])):
        assert cli.main(["index", few_photos, "--out", str(tmp_path / "x.index"), "--preset", name, "--adapt",
                         "-q", *steps]) == 1
    assert seen[0] == ("lite0-icsa-netvlad", ADAPT.replace(attention_lr=seen[0][1].attention_lr))
    assert seen[0][1].attention_lr == pytest.approx(5e-3, rel=1e-12)
    assert seen[1] == ("lite0-ia-netvlad", ADAPT.replace(steps=7, checkpoint_every=7))
    assert not (tmp_path / "x.index").exists()


def test_adapt_starts_from_the_shipped_head(small_regional, few_photos, one_thread):
    shipped = shipped_for(small_regional).float_state()
    near = adapt(small_regional, [few_photos], QUICK, blend_weight=1e-3).head_state
    whole = adapt(small_regional, [few_photos], QUICK, blend_weight=1.0).head_state
    moved = [k for k in whole if not torch.equal(whole[k], shipped[k])]
    assert moved
    for k in moved:  # 1/1000 of the way from the shipped head to the adapted one
        torch.testing.assert_close(near[k], shipped[k] + 1e-3 * (whole[k] - shipped[k]))


def test_adapt_without_a_trained_start_returns_the_adapted_head_from_two_photos(small_regional, few_photos,
                                                                               one_thread, tmp_path):
    untrained = small_regional.replace(head=HeadConfig("regional", {"levels": 2}))  # no shipped file fits
    for name in sorted(os.listdir(few_photos))[:2]:
        shutil.copy(os.path.join(few_photos, name), tmp_path)
    res = adapt(untrained, [str(tmp_path)], QUICK, blend_weight=0.5)  # nothing to blend with: whole
    assert set(res.head_state) == set(build_head(untrained.head, 1280).state_dict())
    os.remove(os.path.join(tmp_path, sorted(os.listdir(tmp_path))[0]))
    with pytest.raises(ImretError, match=f"^--adapt needs at least two photos to contrast, found 1 in {tmp_path}$"):
        adapt(untrained, [str(tmp_path)], QUICK)

