"""A recipe of several seeds trains each from the first seed's start and ships the mean
of the trained heads, blended with that start."""
import pytest
import torch

from imret.config import ConfigError, ExtractionConfig, HeadConfig, Preset, WhiteningConfig
from imret.core.paths import collect_paths
from imret.training import TrainConfig, train
from imret.training.bank import ViewBank
from imret.training.recipes import Recipe
from imret.training.trainer import training_extractor

# NetVLAD's start (PCA + k-means of the bank's features) depends on the seed's views, so a
# later seed that built its own start would not share the first one's.
PRESET = Preset(name="tiny-netvlad", head=HeadConfig("netvlad", {"attention": "icsa", "clusters": 4, "dim": 16,
                                                                "size": 3}),
                extraction=ExtractionConfig(max_size=96, scales=(1.0,)), whitening=WhiteningConfig(kind="none"))
CFG = TrainConfig(steps=2, batch=3, negatives=2, views=2, max_size=96, refresh_every=2, checkpoint_every=2, lr=1e-2)
pytestmark = pytest.mark.usefixtures("one_thread")


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def bank_of(few_photos):
    ex = training_extractor(PRESET, CFG)
    paths = collect_paths([few_photos])[:4]
    asked: list[int] = []

    def make(seed: int) -> ViewBank:
        asked.append(seed)
        return ViewBank(ex, paths, list(range(len(paths))), CFG.views, seed, cache=False)

    make.asked = asked
    return make


def test_each_seed_trains_on_its_own_views_from_the_first_seeds_start(bank_of):
    recipe = Recipe(CFG, seeds=(0, 3), blend=0.25)
    first, later = recipe.run(PRESET, bank_of)
    assert bank_of.asked[-2:] == [0, 3]
    assert _same(later.start_state, first.start_state)
    alone = train(PRESET, CFG.replace(seed=3), None, bank=bank_of(3))
    assert not _same(alone.start_state, first.start_state)  # seed 3 alone starts elsewhere
    again = train(PRESET, CFG.replace(seed=3), None, bank=bank_of(3), start=first.start_state)
    assert _same(again.head_state, later.head_state)  # the config's seed was replaced by 3
    moved = [k for k in first.head_state if not torch.equal(first.head_state[k], later.head_state[k])]
    assert moved
    start = first.start_state
    quarter = recipe.shipped_state([first, later])
    whole = Recipe(CFG, seeds=(0, 3)).shipped_state([first, later])
    for k in moved:
        mean = (first.head_state[k] + later.head_state[k]) / 2
        assert torch.allclose(whole[k], mean, atol=1e-7)
        assert torch.allclose(quarter[k], 0.75 * start[k] + 0.25 * mean, atol=1e-7)
    with pytest.raises(ValueError, match="different heads"):
        recipe.shipped_state([first, alone])
    with pytest.raises(ValueError, match="no training run"):
        recipe.shipped_state([])


@pytest.mark.parametrize("seeds", [(), (0, 0), (-1,), (1.0,)])
def test_seeds_must_be_distinct_non_negative_integers(seeds):
    with pytest.raises(ConfigError, match="seeds"):
        Recipe(CFG, seeds=seeds)
