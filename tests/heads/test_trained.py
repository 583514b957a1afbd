"""Trained-head files: one file rebuilds the model, its digest is checked, and every
preset that ships a trained head loads it the same way."""
import pytest
import torch

from imret.config import HeadConfig
from imret.errors import WeightsError
from imret.extractor import Extractor
from imret.heads import build_head
from imret.core.digest import weights_digest as state_digest
from imret.heads.trained import load_trained, save_trained, shipped_for, shipped_path
from imret.heads.trained import training_status
from imret.presets import get_preset, list_presets
from imret.training.checkpoint import model_from_checkpoint

ATTENTIVE = ["lite0-dagf", "lite0-regional", "lite0-icsa-netvlad", "lite0-ia-netvlad", "lite0-selfsim"]


def test_a_trained_head_file_round_trips_and_refuses_altered_weights(tmp_path):
    preset = get_preset("lite0-regional")
    head = build_head(preset.head, 1280)
    state = {k: v + 0.01 for k, v in head.state_dict().items()}
    path = tmp_path / "h.pt"
    th = save_trained(path, preset, state, {"protocol": "label-free"}, {"photos": 3})
    got = load_trained(path)
    assert got.digest == th.digest == state_digest(got.state)
    assert got.recipe["protocol"] == "label-free" and got.matches(preset)
    assert all(torch.equal(got.state[k], state[k].half()) for k in state)  # shipped as float16
    p2, s2 = model_from_checkpoint(path)  # --checkpoint accepts it
    assert p2 == preset and all(s2[k].dtype == torch.float32 for k in s2)
    obj = torch.load(path, weights_only=True)
    obj["state"]["hidden.bias"][0] += 1
    torch.save(obj, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match="digest"):
        load_trained(tmp_path / "bad.pt")
    # a preset whose head was changed does not take weights trained for another head
    assert not got.matches(preset.replace(head=HeadConfig("regional", {"levels": 2})))


@pytest.mark.parametrize("name", ATTENTIVE)
def test_every_attentive_preset_ships_a_trained_head_that_the_extractor_loads(name):
    preset = get_preset(name)
    assert shipped_path(name) is not None, f"{name}: no shipped weights (run benchmarks/train_shipped.py)"
    th = shipped_for(preset)
    assert th is not None and th.data["labels"].startswith("none")
    ex = Extractor(preset, device="cpu")
    assert ex.trained is not None and ex.trained.digest == th.digest
    untrained = build_head(preset.head, ex.backbone.out_channels)
    assert state_digest(ex.head.state_dict()) != state_digest(untrained.state_dict())
    assert "trained (label-free)" in training_status(preset)


def test_presets_without_learnable_heads_have_no_training_status():
    plain = [p for p in list_presets() if p.head.name in ("gem", "mac", "spoc", "rmac", "crow")]
    assert plain and all(training_status(p) is None for p in plain)
