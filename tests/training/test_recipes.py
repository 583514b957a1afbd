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


@pytest.fixture(scope="module")
def two_folders(few_photos, tmp_path_factory):
    """The six photos in two folders, a/ (three) and b/sub/ (three), and a bank of them."""
    import os
    import shutil

    root = tmp_path_factory.mktemp("two-folders")
    for i, p in enumerate(collect_paths([few_photos])):
        folder = root / ("a" if i < 3 else os.path.join("b", "sub"))
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, folder)
    paths = collect_paths([str(root)])
    return ViewBank(training_extractor(PRESET, CFG), paths, list(range(len(paths))), CFG.views, 0, cache=False)


def test_clusters_from_fits_the_clusters_on_those_folders_photos_only(two_folders):
    bank = two_folders
    trainers = train(PRESET, CFG, None, bank=bank).start_state
    assert _same(Recipe(CFG, clusters_from=("a", "b/sub")).start(PRESET, bank), trainers)  # every photo: as it was
    assert Recipe(CFG).start(PRESET, bank) is None
    start = Recipe(CFG, clusters_from=("b",)).start(PRESET, bank)
    photos = bank.photo_items()
    in_b = [k for k, p in zip(photos, bank.paths) if "/b/sub/" in p]
    assert len(in_b) == 3
    by_hand = _netvlad_head()
    with torch.no_grad():
        by_hand.init_from_features(bank.maps(photos), seed=0, cluster_maps=bank.maps(in_b))
    assert _same(start, by_hand.state_dict())
    assert torch.equal(start["reduce.weight"], trainers["reduce.weight"])  # the PCA of every photo
    assert not torch.equal(start["centroids"], trainers["centroids"])
    (run,) = Recipe(CFG, clusters_from=("b",)).run(PRESET, lambda seed: bank)
    assert _same(run.start_state, start)  # the first seed trains from it (and every later seed from the first's)


def test_clusters_from_refuses_what_it_cannot_do(two_folders):
    with pytest.raises(ValueError, match="^recipe: no training photo lies under c, d$"):
        Recipe(CFG, clusters_from=("c", "d")).start(PRESET, two_folders)
    with pytest.raises(ConfigError, match="clusters_from"):
        Recipe(CFG, clusters_from="a")
    selfsim = Preset(name="tiny-selfsim", head=HeadConfig("selfsim", {}), extraction=PRESET.extraction,
                     whitening=PRESET.whitening)
    with pytest.raises(ConfigError, match="fits no clusters"):
        Recipe(CFG, clusters_from=("a",)).start(selfsim, two_folders)


def test_clusters_from_starts_at_the_first_seed_as_the_trainer_would(two_folders):
    bank = ViewBank(two_folders.extractor, two_folders.paths, list(range(len(two_folders.paths))), CFG.views, 3,
                    cache=False)
    trainers = train(PRESET, CFG.replace(seed=3), None, bank=bank).start_state
    start = Recipe(CFG, seeds=(3, 0), clusters_from=("a", "b")).start(PRESET, bank)
    assert _same(start, trainers)
    assert not _same(start, train(PRESET, CFG, None, bank=two_folders).start_state)


def _netvlad_head():
    from imret.heads import build_head

    return build_head(PRESET.head, training_extractor(PRESET, CFG).backbone.out_channels)
