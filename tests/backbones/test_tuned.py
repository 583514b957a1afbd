"""Fine-tuned backbone stages: a file replaces exactly the last groups of a net, is checked
on load, and every path that builds a backbone from a config gets it."""
import pytest
import torch
from torch import nn

from imret.backbones import build_backbone
from imret.backbones.tuned import (apply_tuned, group_keys, load_tuned, save_tuned, stages_state,
                                   tuned_status)
from imret.config import BackboneConfig, ConfigError
from imret.core.digest import weights_digest
from imret.errors import WeightsError
from imret.presets import get_preset


def _random_lite0(seed: int):
    torch.manual_seed(seed)
    return build_backbone(BackboneConfig(weights="random"))


def test_group_keys_are_the_state_keys_of_the_named_modules_and_only_those():
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    assert group_keys(net, [[net[1]]]) == ["1.weight", "1.bias", "1.running_mean", "1.running_var",
                                           "1.num_batches_tracked"]
    assert group_keys(net, [[net[0]], [net[2]]]) == ["0.weight", "0.bias", "2.0.weight", "2.0.bias"]
    assert group_keys(net, []) == []
    assert group_keys(net[2], [[net[2]]]) == ["0.weight", "0.bias"]  # the root module's keys have no prefix


def test_lite0_last_two_groups_are_its_last_mbconv_block_and_head_conv():
    b = _random_lite0(0)
    keys = list(stages_state(b, 2))
    assert {k.split(".")[0] + "." + k.split(".")[1] for k in keys if k.startswith("_blocks.")} == {"_blocks.15"}
    assert "_conv_head.weight" in keys and "_bn1.running_var" in keys
    assert not any(k.startswith(("_blocks.14.", "_fc.", "_conv_stem.")) for k in keys)
    one = stages_state(b, 1)
    assert set(one) == {"_conv_head.weight", "_bn1.weight", "_bn1.bias", "_bn1.running_mean", "_bn1.running_var",
                        "_bn1.num_batches_tracked"}
    with pytest.raises(ValueError, match=r"^groups must be in \[1, 9\], got 10$"):
        stages_state(b, 10)
    assert set(stages_state(b, 9)) == set(b.net.state_dict()) - {"_fc.weight", "_fc.bias"}  # every group


def test_a_tuned_file_replaces_the_last_groups_and_leaves_every_other_tensor(tmp_path):
    tuned = _random_lite0(1)
    path = tmp_path / "t.pt"
    ts = save_tuned(path, "efficientnet-lite0", tuned, 2, {"protocol": "label-free"}, {"photos": 3})
    assert ts.digest == weights_digest(ts.state) and all(v.dtype == torch.float16 for v in ts.state.values()
                                                         if v.is_floating_point())
    target = _random_lite0(2)
    before = {k: v.clone() for k, v in target.net.state_dict().items()}
    got = load_tuned(str(path))
    assert got.groups == 2 and got.recipe == {"protocol": "label-free"} and got.data == {"photos": 3}
    apply_tuned(target, got, "efficientnet-lite0")
    after, source = target.net.state_dict(), tuned.net.state_dict()
    replaced = set(ts.state)
    for k, v in after.items():
        if k in replaced:
            expect = source[k].half().to(v.dtype) if v.is_floating_point() else source[k]
            assert torch.equal(v, expect), k
        else:
            assert torch.equal(v, before[k]), k
    assert any(not torch.equal(after[k], before[k]) for k in replaced)


def test_a_backbone_config_naming_a_tuned_file_builds_the_tuned_net(tmp_path):
    imagenet = build_backbone(BackboneConfig())
    with torch.no_grad():
        for k, v in stages_state(imagenet, 2).items():
            if v.is_floating_point():
                v.mul_(0.5)
    path = str(tmp_path / "t.pt")
    save_tuned(path, "efficientnet-lite0", imagenet, 2, {}, {})
    built = build_backbone(BackboneConfig(tuned=path)).net.state_dict()
    plain = build_backbone(BackboneConfig()).net.state_dict()
    tuned_keys = set(stages_state(imagenet, 2))
    assert all(torch.equal(built[k], plain[k]) for k in plain if k not in tuned_keys)
    assert all(torch.equal(built[k], imagenet.net.state_dict()[k].half().float()) for k in tuned_keys
               if built[k].is_floating_point())


def test_a_tuned_file_that_does_not_fit_is_refused_with_its_reason(tmp_path):
    b = _random_lite0(0)
    path = tmp_path / "t.pt"
    save_tuned(path, "efficientnet-lite0", b, 2, {}, {})
    with pytest.raises(WeightsError, match="tuned stages of backbone 'efficientnet-lite0', not 'resnet50'"):
        apply_tuned(b, load_tuned(str(path)), "resnet50")
    obj = torch.load(path, weights_only=True)
    obj["groups"] = 1  # claims one group but holds two
    torch.save(obj, tmp_path / "groups.pt")
    with pytest.raises(WeightsError, match="does not hold the last 1 groups"):
        apply_tuned(b, load_tuned(str(tmp_path / "groups.pt")), "efficientnet-lite0")
    obj = torch.load(path, weights_only=True)
    obj["state"]["_conv_head.weight"][0, 0, 0, 0] += 1
    torch.save(obj, tmp_path / "altered.pt")
    with pytest.raises(WeightsError, match="digest"):
        load_tuned(str(tmp_path / "altered.pt"))
    torch.save({"format": "something-else"}, tmp_path / "foreign.pt")
    with pytest.raises(WeightsError, match="not an imret file of tuned backbone stages"):
        load_tuned(str(tmp_path / "foreign.pt"))
    with pytest.raises(WeightsError, match="ships none of that name"):
        load_tuned("no-such-tuned-stages")


def test_tuned_stages_are_refused_over_random_weights_and_dropped_with_other_weights():
    with pytest.raises(ConfigError, match="weights='random'"):
        BackboneConfig(weights="random", tuned="x")
    with pytest.raises(ConfigError, match="non-empty"):
        BackboneConfig(tuned="")
    p = get_preset("lite0-gem-tuned", weights="/some/checkpoint.pt")
    assert p.backbone.weights == "/some/checkpoint.pt" and p.backbone.tuned is None
    assert BackboneConfig.from_dict(get_preset("lite0-gem-tuned").backbone.to_dict()).tuned == "lite0-ft2-v1"


def test_tuned_status_says_what_the_stages_are(tmp_path):
    assert tuned_status(BackboneConfig()) is None
    b = _random_lite0(0)
    path = str(tmp_path / "t.pt")
    save_tuned(path, "efficientnet-lite0", b, 2, {"protocol": "label-free", "seeds": [0, 1, 2],
                                                  "train": {"loss": "triplet", "steps": 150, "lr": 1e-4}},
               {"photos": 191, "folders": ["a", "b"], "labels": "none"})
    s = tuned_status(BackboneConfig(tuned=path))
    assert "last 2 parameter groups fine-tuned (label-free) on 191 photos of a, b [labels: none]" in s
    assert "150 steps at lr 0.0001, mean of seeds 0, 1, 2" in s
    assert "unavailable" in tuned_status(BackboneConfig(tuned=str(tmp_path / "missing.pt")))


def test_a_checkpoint_with_its_whole_backbone_drops_the_tuned_stages_it_already_holds(tmp_path):
    from imret.training import TrainConfig
    from imret.training.checkpoint import Checkpoint, make_meta, model_from_checkpoint, save_checkpoint

    preset = get_preset("lite0-gem-tuned")
    meta = make_meta(preset, TrainConfig(train_blocks=2), None, 1, [0.5], {})
    path = tmp_path / "ck.pt"
    save_checkpoint(path, Checkpoint(meta, {}, {}, None, {"w": torch.zeros(1)}))
    got, _ = model_from_checkpoint(path)
    assert got.backbone.weights == str(path) and got.backbone.tuned is None
    save_checkpoint(path, Checkpoint(meta, {}, {}))  # head only: the tuned stages stay
    assert model_from_checkpoint(path)[0].backbone.tuned == "lite0-ft2-v1"


def test_the_shipped_tuned_preset_indexes_saves_and_searches_with_its_tuned_net(photoset, tmp_path):
    from imret.config import ExtractionConfig
    from imret.core.threads import ThreadPlan
    from imret.extractor import Extractor
    from imret.index.store import Index
    from imret.index.workers import ParallelExtractor

    ts = load_tuned("lite0-ft2-v1")
    assert ts.groups == 2 and ts.data["labels"].startswith("none") and ts.recipe["seeds"] == [0, 1, 2]
    small = ExtractionConfig(max_size=160, scales=(1.0,))
    tuned = get_preset("lite0-gem-tuned").replace(extraction=small)
    plain = get_preset("default").replace(extraction=small)
    paths = sorted(photoset.db)[:5]
    index, _ = Index.build(paths, tuned)
    index.save(str(tmp_path / "t.index"))
    loaded = Index.load(str(tmp_path / "t.index"))
    assert loaded.preset.backbone.tuned == "lite0-ft2-v1"
    ex = loaded.extractor(device="cpu")
    by_hand = build_backbone(BackboneConfig())
    apply_tuned(by_hand, ts, "efficientnet-lite0")
    own, want = ex.backbone.net.state_dict(), by_hand.net.state_dict()
    assert all(torch.equal(own[k], want[k]) for k in want)
    assert loaded.search_image(paths[2], top=1)[0].path == paths[2]
    d_tuned = Extractor(tuned, device="cpu").extract(paths[0])
    d_plain = Extractor(plain, device="cpu").extract(paths[0])
    assert float(d_tuned @ d_plain) < 0.999  # the tuned stages change the descriptor
    # worker processes build their backbone from the same config
    par = ParallelExtractor(ex, ThreadPlan(intra=1, interop=1, workers=2, cpus=2), chunk=2)
    torch.testing.assert_close(torch.from_numpy(par.extract_paths(paths[:4]).descriptors),
                               torch.from_numpy(ex.extract_paths(paths[:4]).descriptors), atol=1e-6, rtol=0)


def test_every_refusal_names_the_file_and_its_exact_reason(tmp_path):
    b = _random_lite0(0)
    path = str(tmp_path / "t.pt")
    assert save_tuned(path, "efficientnet-lite0", b, 2, {}, {}).path == path
    with pytest.raises(WeightsError, match=r"missing\.pt: no such file of tuned backbone stages, and this imret ships "
                                           r"none of that name \(an index built by another imret version\? rebuild it "
                                           r"with this one\)$"):
        load_tuned(str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match=r"junk\.pt: not a readable imret tuned-stages file \("):
        load_tuned(str(tmp_path / "junk.pt"))
    torch.save({"format": "other"}, tmp_path / "foreign.pt")
    with pytest.raises(WeightsError, match=r"foreign\.pt: not an imret file of tuned backbone stages "
                                           r"\(format imret-backbone-stages/1\)$"):
        load_tuned(str(tmp_path / "foreign.pt"))
    obj = torch.load(path, weights_only=True)
    obj["state"]["_bn1.bias"][0] += 1
    torch.save(obj, tmp_path / "altered.pt")
    with pytest.raises(WeightsError, match=r"altered\.pt: weights do not match their digest "
                                           r"\(file altered or damaged\)$"):
        load_tuned(str(tmp_path / "altered.pt"))
    with pytest.raises(WeightsError, match=r"t\.pt: tuned stages of backbone 'efficientnet-lite0', "
                                           r"not 'efficientnet-lite2'$"):
        apply_tuned(b, load_tuned(path), "efficientnet-lite2")
    obj = torch.load(path, weights_only=True)
    obj["groups"] = 10
    torch.save(obj, tmp_path / "ten.pt")
    with pytest.raises(WeightsError, match=r"ten\.pt: replaces 10 parameter groups; backbone 'efficientnet-lite0' "
                                           r"cut at 'head' has 9$"):
        apply_tuned(b, load_tuned(str(tmp_path / "ten.pt")), "efficientnet-lite0")


def test_a_file_may_replace_every_group_of_the_net(tmp_path):
    source, target = _random_lite0(3), _random_lite0(4)
    path = str(tmp_path / "all.pt")
    save_tuned(path, "efficientnet-lite0", source, 9, {}, {}, half=False)
    apply_tuned(target, load_tuned(path), "efficientnet-lite0")
    got, want = target.net.state_dict(), source.net.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want if not k.startswith("_fc."))
