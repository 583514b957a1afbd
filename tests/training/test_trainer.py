"""The training loop on a few real photos: checkpoints, resuming, determinism, what trains."""
import os

import numpy as np
import pytest
import torch

from imret.config import ConfigError, ExtractionConfig, HeadConfig, Preset, WhiteningConfig
from imret.errors import ImretError
from imret.extractor import Extractor
from imret.io.images import list_images
from imret.training import TrainConfig, load_checkpoint, model_from_checkpoint, train
from imret.training.bank import ViewBank, describe
from imret.training.trainer import training_extractor
from imret.training.unfreeze import unfreeze_last

PRESET = Preset(name="tiny-dagf", head=HeadConfig("dagf", {"scales": 2}),
                extraction=ExtractionConfig(max_size=96, scales=(1.0,)), whitening=WhiteningConfig(kind="none"))
pytestmark = pytest.mark.usefixtures("one_thread")

CFG = TrainConfig(steps=6, batch=3, negatives=2, views=2, max_size=96, refresh_every=2, checkpoint_every=3, lr=1e-2)


@pytest.fixture(scope="module")
def trained(few_photos, tmp_path_factory, one_thread):
    out = str(tmp_path_factory.mktemp("ckpt") / "model.pt")
    return train(PRESET, CFG, few_photos, out=out), out


def _photos(folder, n=3):
    return sorted(list_images(folder))[:n]


def test_checkpoint_round_trips_to_identical_descriptors(trained, few_photos):
    res, out = trained
    raw = torch.load(out, map_location="cpu", weights_only=True)
    assert raw["meta"]["step"] == 6 and len(raw["meta"]["losses"]) == 6
    assert "state_dict" not in raw  # a frozen backbone is not stored again
    preset, head_state = model_from_checkpoint(out)
    assert preset == PRESET
    from_file = Extractor(preset, device="cpu", head_state=head_state)
    in_memory = Extractor(PRESET, device="cpu", head_state=res.head_state)
    untrained = Extractor(PRESET, device="cpu")
    for p in _photos(few_photos):
        d = from_file.extract(p)
        assert d.dtype == np.float32 and abs(np.linalg.norm(d) - 1) < 1e-5
        assert np.array_equal(d, in_memory.extract(p))
        assert not np.allclose(d, untrained.extract(p), atol=1e-5)  # training moved the head


def test_resume_takes_the_steps_an_uninterrupted_run_takes(trained, few_photos, tmp_path):
    _, straight = trained
    out = str(tmp_path / "cut.pt")
    train(PRESET, CFG.replace(steps=3), few_photos, out=out)
    assert load_checkpoint(out).step == 3
    train(PRESET, CFG, few_photos, out=out, resume=True)
    a, b = load_checkpoint(straight), load_checkpoint(out)
    assert b.step == 6 and a.meta["losses"] == b.meta["losses"]
    assert all(torch.equal(a.head[k], b.head[k]) for k in a.head)


def test_the_result_keeps_the_start_the_steps_left_and_a_recipe_blends_from_it(trained, few_photos, tmp_path):
    from imret.training.recipes import Recipe

    res, _ = trained
    untrained = Extractor(PRESET, device="cpu")
    begun = Extractor(PRESET, device="cpu", head_state=res.start_state)
    for p in _photos(few_photos, 2):  # DAGF's attention starts at identity: its start describes as a fresh head
        assert np.allclose(begun.extract(p), untrained.extract(p), atol=1e-6)
    moved = [k for k in res.head_state if not torch.equal(res.head_state[k], res.start_state[k])]
    assert moved
    given = train(PRESET, CFG.replace(steps=2), few_photos, start=res.head_state)
    assert all(torch.equal(given.start_state[k], res.head_state[k]) for k in res.head_state)
    assert Recipe(CFG).shipped_state([res]) is res.head_state
    half = Recipe(CFG, blend=0.25).shipped_state([res])
    for k in moved:
        assert torch.allclose(half[k], 0.75 * res.start_state[k] + 0.25 * res.head_state[k], atol=1e-7)
    out = str(tmp_path / "cut.pt")
    train(PRESET, CFG.replace(steps=3), few_photos, out=out)
    resumed = train(PRESET, CFG, few_photos, out=out, resume=True)
    assert resumed.start_state is None  # the checkpoint does not keep it
    with pytest.raises(ValueError, match="resumed"):
        Recipe(CFG, blend=0.5).shipped_state([resumed])
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="blend"):
            Recipe(CFG, blend=bad)


def test_same_seed_same_model_other_seed_another(trained, few_photos):
    res, _ = trained
    again = train(PRESET, CFG, few_photos)
    assert all(torch.equal(res.head_state[k], again.head_state[k]) for k in res.head_state)
    other = train(PRESET, CFG.replace(seed=1), few_photos)
    assert not all(torch.equal(res.head_state[k], other.head_state[k]) for k in res.head_state)


def test_an_existing_checkpoint_is_continued_only_on_request_and_unchanged(trained, few_photos):
    _, out = trained
    with pytest.raises(ImretError, match="--resume"):
        train(PRESET, CFG, few_photos, out=out)
    with pytest.raises(ImretError, match="preset"):
        train(PRESET.replace(head=HeadConfig("dagf")), CFG, few_photos, out=out, resume=True)
    with pytest.raises(ImretError, match="lr"):
        train(PRESET, CFG.replace(lr=0.5), few_photos, out=out, resume=True)


def test_a_head_with_nothing_to_learn_is_refused(few_photos):
    with pytest.raises(ConfigError, match="nothing to train"):
        train(PRESET.replace(head=HeadConfig("gem")), CFG, few_photos)


def test_training_the_last_backbone_stage(few_photos, tmp_path):
    out = str(tmp_path / "blocks.pt")
    cfg = CFG.replace(steps=2, train_blocks=1)
    res = train(PRESET, cfg, few_photos, out=out)
    ck = load_checkpoint(out)
    packaged = Extractor(PRESET, device="cpu").backbone.net.state_dict()
    changed = {k for k in packaged if not torch.equal(packaged[k], ck.backbone[k])}
    assert changed and all(k.startswith(("_conv_head.", "_bn1.")) for k in changed)
    assert not any("running" in k for k in changed)  # batch-norm statistics stay as they were
    preset, head_state = model_from_checkpoint(out)
    assert preset.backbone.weights == os.path.abspath(out)  # the checkpoint is the backbone's weights file
    by_hand = Extractor(PRESET, device="cpu", head_state=res.head_state)
    by_hand.backbone.net.load_state_dict(ck.backbone)
    from_file = Extractor(preset, device="cpu", head_state=head_state)
    for p in _photos(few_photos, 2):
        assert np.array_equal(from_file.extract(p), by_hand.extract(p))


def test_netvlad_clusters_start_from_kmeans_of_training_features(few_photos):
    preset = PRESET.replace(head=HeadConfig("netvlad", {"attention": "icsa", "clusters": 4, "dim": 16, "size": 3}))
    res = train(preset, CFG.replace(steps=1), few_photos)
    untrained = Extractor(preset, device="cpu").head.state_dict()
    moved = (res.head_state["centroids"] - untrained["centroids"]).norm() / untrained["centroids"].norm()
    assert moved > 0.5
    assert not torch.allclose(res.head_state["reduce.weight"], untrained["reduce.weight"])


def test_cached_maps_describe_as_the_extractor_does(trained, few_photos):
    res, _ = trained
    ex = Extractor(PRESET, device="cpu", head_state=res.head_state)
    paths = _photos(few_photos, 4)
    maps = [ex.feature_map(ex.load(p)) for p in paths]
    with torch.no_grad():
        got = describe(ex.head, maps).numpy()
    assert np.allclose(got, np.stack([ex.extract(p) for p in paths]), atol=1e-6)


def test_a_bank_for_trained_stages_caches_what_enters_them(few_photos):
    """With the last two of Lite0's groups training, the bank holds the 192-channel maps
    entering them once, and a step's maps are those groups on it: the maps of the
    view images through the whole backbone, with gradients reaching those groups only."""
    cfg = CFG.replace(train_blocks=2)
    ex = training_extractor(PRESET, cfg)
    paths = _photos(few_photos, 2)
    images = ViewBank(ex, paths, [0, 1], 2, 0, cache=False)
    split = ViewBank(ex, paths, [0, 1], 2, 0, train_blocks=2, dtype=torch.float32)
    assert split.train_blocks == 2 and split.state()["train_blocks"] == 2
    assert [m.shape[1] for m in split._store] == [192] * 4  # stage 7's input, not the 1280-d head
    assert all(torch.equal(a, b) for a, b in zip(images.cached(2, torch.float32)._store, split._store))
    trained = unfreeze_last(ex.backbone, 2)
    ks = [0, 1, 2, 3]
    got, want = split.maps(ks), images.maps(ks)
    assert all(g.shape == w.shape and torch.allclose(g, w, atol=1e-4) for g, w in zip(got, want))
    ex.backbone.zero_grad(set_to_none=True)
    sum(g.sum() for g in got).backward()
    assert {id(p) for p in ex.backbone.parameters() if p.grad is not None} == {id(p) for p in trained}
    unfreeze_last(ex.backbone, 0)
    with pytest.raises(ValueError, match="holds maps already"):
        split.cached(1)
    with pytest.raises(ValueError, match="other training settings"):
        train(PRESET, cfg.replace(train_blocks=1), None, bank=split)


@pytest.mark.parametrize("attention, own", [("icsa", ("attention.channel", "attention.spatial")),
                                            ("ia", ("attention.theta",))])
def test_attention_lr_trains_the_input_independent_weights_at_their_own_rate(attention, own):
    from imret.heads import build_head
    from imret.training.trainer import make_optimizer

    head = build_head(HeadConfig("netvlad", {"attention": attention, "clusters": 2, "dim": 4, "size": 3}), 8)
    extra = torch.nn.Parameter(torch.zeros(3))
    before = {k: v.detach().clone() for k, v in head.named_parameters()}
    opt = make_optimizer(TrainConfig(lr=1e-3, attention_lr=1e-1), head, [extra])
    for p in [*head.parameters(), extra]:
        p.grad = torch.ones_like(p)
    opt.step()
    # Adam's first step moves each weight by its group's rate times the gradient's sign
    for name, p in head.named_parameters():
        rate = 1e-1 if name in own else 1e-3
        assert torch.allclose(before[name] - p.detach(), torch.full_like(p, rate), rtol=1e-4), name
    assert torch.allclose(extra.detach(), torch.full((3,), -1e-3), rtol=1e-4)


def test_without_attention_lr_or_input_independent_weights_one_rate_trains_all():
    from imret.heads import build_head
    from imret.training.trainer import make_optimizer

    for cfg, attention in ((TrainConfig(lr=1e-3), "icsa"), (TrainConfig(lr=1e-3, attention_lr=1e-1), "cbam")):
        head = build_head(HeadConfig("netvlad", {"attention": attention, "clusters": 2, "dim": 4, "size": 3}), 8)
        opt = make_optimizer(cfg, head, [])
        assert [g["lr"] for g in opt.param_groups] == [1e-3]
        assert len(opt.param_groups[0]["params"]) == len(list(head.parameters()))
    for bad in (0.0, -1e-3, "fast"):
        with pytest.raises(ConfigError, match="attention_lr"):
            TrainConfig(attention_lr=bad)
