"""Mined positives: shortlists, linking, verification, and training with them."""
import os

import numpy as np
import pytest
import torch

from imret.config import ConfigError, ExtractionConfig, HeadConfig, Preset, WhiteningConfig
from imret.local.features import LocalFeatures
from imret.training import TrainConfig, train
from imret.training.data import linked_labels
from imret.training.mine import MineConfig, mine_labels, shortlist_pairs, verified_links

PRESET = Preset(name="tiny-dagf", head=HeadConfig("dagf", {"scales": 2}),
                extraction=ExtractionConfig(max_size=96, scales=(1.0,)), whitening=WhiteningConfig(kind="none"))
CFG = TrainConfig(steps=2, batch=3, negatives=2, views=2, max_size=96, refresh_every=2, lr=1e-2)

PARIS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "paris6k-sub")


def test_shortlist_pairs_each_photo_with_its_nearest_once():
    # cosines: 0·1 = .9, 0·2 = .1, 1·2 = .3, 3 is 2's nearest (.8) and far from 0 and 1
    d = np.array([[1, 0, 0], [.9, np.sqrt(1 - .81), 0], [.1, .3, .948], [0, .1, 1]], np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    sims = d @ d.T
    np.fill_diagonal(sims, -9)
    nearest = sims.argmax(1)
    assert list(nearest) == [1, 0, 3, 2]
    assert shortlist_pairs(d, 1).tolist() == [[0, 1], [2, 3]]
    two = shortlist_pairs(d, 2)
    second = np.argsort(-sims, 1)[:, 1]
    expected = {tuple(sorted((i, int(j)))) for i in range(4) for j in (nearest[i], second[i])}
    assert {tuple(p) for p in two.tolist()} == expected and len(two) == len(expected)
    assert shortlist_pairs(d, 10).tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    assert shortlist_pairs(d[:1], 5).shape == (0, 2)


def test_linked_labels_join_through_links_and_given_labels():
    assert linked_labels(5, []) == [0, 1, 2, 3, 4]
    assert linked_labels(5, [(3, 1), (1, 0)]) == [0, 0, 1, 0, 2]  # 3–1–0 one instance, through 1
    assert linked_labels(5, np.array([[2, 4]]), labels=[7, 8, 9, 8, 5]) == [0, 1, 2, 1, 2]
    assert linked_labels(4, [(0, 3)], labels=[1, 1, 2, 2]) == [0, 0, 0, 0]  # a link joins two labelled groups


def _features(rng, descriptors, xy, size=(300, 400)):
    n = len(xy)
    return LocalFeatures(xy.astype(np.float32), np.ones(n, np.float32), np.ones(n, np.float32),
                         descriptors.astype(np.float32), size)


def _scene(seed=0, n=40, dim=64):
    rng = np.random.default_rng(seed)
    desc = rng.normal(size=(n, dim))
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    xy = rng.uniform([10, 10], [390, 290], size=(n, 2))
    return rng, desc, xy


def test_verified_links_keep_pairs_one_affine_map_explains():
    rng, desc, xy = _scene()
    a = _features(rng, desc, xy)
    moved = xy @ np.array([[0.9, 0.1], [-0.1, 0.9]]).T + [20, -5]  # the same points, seen from elsewhere
    b = _features(rng, desc, moved)
    shuffled = _features(rng, desc, rng.permutation(xy))  # same descriptors, no consistent geometry
    _, other, _ = _scene(seed=1)
    c = _features(rng, other, xy)  # other descriptors at the same places
    pairs = np.array([[0, 1], [0, 2], [0, 3], [1, 3]])
    assert verified_links([a, b, shuffled, c], pairs, MineConfig()).tolist() == [[0, 1]]
    # the bound counts: 40 inliers verify at 40 and not at 41
    assert verified_links([a, b], np.array([[0, 1]]), MineConfig(min_inliers=40)).tolist() == [[0, 1]]
    assert verified_links([a, b], np.array([[0, 1]]), MineConfig(min_inliers=41)).shape == (0, 2)
    assert verified_links([a, None], np.array([[0, 1]]), MineConfig()).shape == (0, 2)  # a photo that did not load


def test_mine_labels_verify_only_the_shortlist():
    rng, desc, xy = _scene()
    a = _features(rng, desc, xy)
    b = _features(rng, desc, xy + [15, 10])
    _, other, _ = _scene(seed=2)
    c = _features(rng, other, xy)
    glob = np.array([[1, 0], [0, 1], [0.8, 0.6]], np.float32)  # 0's nearest is 2, 1's is 2, 2's is 0
    assert mine_labels(["a", "b", "c"], glob, MineConfig(shortlist=1), features=[a, b, c]) == ([0, 1, 2], 0)
    assert mine_labels(["a", "b", "c"], glob, MineConfig(shortlist=2), features=[a, b, c]) == ([0, 0, 1], 1)
    assert mine_labels(["a", "b", "c"], glob, MineConfig(shortlist=2), labels=[0, 1, 0],
                       features=[a, b, c]) == ([0, 0, 0], 1)


def test_mine_config_is_checked_once():
    with pytest.raises(ConfigError, match="unknown local features"):
        MineConfig(local="sift")
    with pytest.raises(ConfigError, match="min_inliers"):
        MineConfig(min_inliers=0)
    with pytest.raises(ConfigError, match="mine must be true or false"):
        TrainConfig(mine="yes")


@pytest.mark.skipif(not os.path.isdir(PARIS), reason="../shared/data/paris6k-sub not present")
def test_verification_links_photos_of_one_landmark_and_no_two_landmarks():
    """Real photos: the first three (by name) of two landmarks, none of them a hard one."""
    import csv

    with open(os.path.join(PARIS, "labels.tsv"), encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["hard"] == "0"]
    chosen = [r for place in ("eiffel", "louvre") for r in sorted(
        (r for r in rows if r["instance"] == place), key=lambda r: r["image"])[:3]]
    paths = [os.path.join(PARIS, "jpg", r["image"] + ".jpg") for r in chosen]
    torch.set_num_threads(1)
    labels, links = mine_labels(paths, np.eye(6, dtype=np.float32), MineConfig(shortlist=5))
    place = [r["instance"] for r in chosen]
    for i in range(6):
        for j in range(i + 1, 6):
            if place[i] != place[j]:
                assert labels[i] != labels[j], (paths[i], paths[j])
    assert links >= 1 and len(set(labels)) < 6  # at least one pair within a landmark links


@pytest.fixture(scope="module")
def linkable_photos(few_photos, tmp_path_factory):
    """Three real photos and a crop of each, enlarged (the same scene seen closer: an affine map
    explains the matches): mining should make three instances of the six photos."""
    from PIL import Image

    root = tmp_path_factory.mktemp("linkable")
    for i, name in enumerate(sorted(os.listdir(few_photos))[:3]):
        img = Image.open(os.path.join(few_photos, name)).convert("RGB")
        w, h = img.size
        img.save(root / f"{i}a.png")
        img.crop((w // 8, h // 8, w - w // 8, h - h // 8)).resize((w, h), Image.BILINEAR).save(root / f"{i}b.png")
    return str(root)


def test_mining_links_each_photo_with_its_crop(linkable_photos, one_thread):
    res = train(PRESET, CFG.replace(mine=True), linkable_photos)
    assert (res.mined.links, res.mined.instances, res.mined.photos) == (3, 3, 6)


def test_training_with_mined_positives_relabels_linked_photos(few_photos, linkable_photos, one_thread):
    """Train's ``mine`` relabels the bank before the first step: the steps change where photos were
    linked, and only there."""
    for folder, links in ((few_photos, 0), (linkable_photos, 3)):
        plain = train(PRESET, CFG, folder)
        mined = train(PRESET, CFG.replace(mine=True), folder)
        assert plain.mined is None and mined.mined.links == links
        assert (plain.losses != mined.losses) == (links > 0)


def test_a_resumed_run_takes_the_links_its_checkpoint_saved(linkable_photos, one_thread, tmp_path):
    """Mining again from the checkpoint's head could link other photos than the steps already taken saw."""
    from imret.training import load_checkpoint, save_checkpoint

    cfg = CFG.replace(mine=True, steps=4, checkpoint_every=2)
    whole = train(PRESET, cfg, linkable_photos)
    out = str(tmp_path / "mined.pt")
    train(PRESET, cfg.replace(steps=2), linkable_photos, out=out)
    ck = load_checkpoint(out)
    assert whole.mined.links > 0  # else the last check below could not tell
    assert len(ck.meta["mined"]["labels"]) == 6 and ck.meta["mined"]["links"] == whole.mined.links
    again = train(PRESET, cfg, linkable_photos, out=out, resume=True)
    assert again.losses == whole.losses and again.mined == whole.mined
    ck.meta["mined"] = {"labels": list(range(6)), "links": 0}  # as if the first run had linked none
    save_checkpoint(out, ck)
    unlinked = train(PRESET, cfg, linkable_photos, out=out, resume=True)
    assert (unlinked.mined.links, unlinked.mined.instances) == (0, 6)
