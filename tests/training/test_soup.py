"""A soup of fine-tuned backbone stages is the mean of the runs it averages, run by run
the same as training each seed alone, and written as a tuned-stages file that builds it."""
import numpy as np
import pytest
import torch

from imret.backbones.tuned import save_tuned, stages_state
from imret.config import ExtractionConfig, HeadConfig, Preset, WhiteningConfig
from imret.core.paths import collect_paths
from imret.extractor import Extractor
from imret.training import TrainConfig
from imret.training.soup import train_soup

PRESET = Preset(name="tiny-gem", head=HeadConfig("gem", {"p": 3.0}),
                extraction=ExtractionConfig(max_size=96, scales=(1.0,)), whitening=WhiteningConfig(kind="none"))
CFG = TrainConfig(steps=2, batch=3, negatives=2, views=2, max_size=96, refresh_every=2, checkpoint_every=2,
                  lr=1e-2, train_blocks=1)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def paths(few_photos):
    return collect_paths([few_photos])[:4]


def test_a_soup_is_the_mean_of_its_runs_and_each_run_is_that_seed_alone(paths):
    alone = [train_soup(PRESET, CFG, paths, [s]).stages for s in (0, 1)]
    both = train_soup(PRESET, CFG, paths, [0, 1])
    assert len(both.runs) == 2 and list(both.head_state) == ["p"]
    assert both.head_state["p"].item() == 3.0  # GeM's p stays fixed: only the backbone trains
    moved = [k for k in alone[0] if alone[0][k].is_floating_point() and not torch.equal(alone[0][k], alone[1][k])]
    assert moved  # the two seeds trained to different weights
    for k, v in both.stages.items():
        if v.is_floating_point():
            assert torch.allclose(v, (alone[0][k] + alone[1][k]) / 2, atol=1e-7), k
        else:
            assert torch.equal(v, alone[0][k])
    in_net = stages_state(both.extractor.backbone, 1)
    assert all(torch.equal(in_net[k], both.stages[k]) for k in both.stages)


def test_the_soup_written_as_tuned_stages_extracts_as_the_soup_did(paths, tmp_path):
    soup = train_soup(PRESET, CFG, paths, [0, 1])
    path = str(tmp_path / "soup.pt")
    save_tuned(path, "efficientnet-lite0", soup.extractor.backbone, 1, {}, {}, half=False)
    tuned = PRESET.replace(backbone=PRESET.backbone.replace(tuned=path))
    from_file, plain = Extractor(tuned, device="cpu"), Extractor(PRESET, device="cpu")
    by_hand = Extractor(PRESET, device="cpu")
    by_hand.backbone.net.load_state_dict(soup.stages, strict=False)
    for p in paths[:2]:
        d = from_file.extract(p)
        assert np.array_equal(d, by_hand.extract(p))
        assert not np.allclose(d, plain.extract(p), atol=1e-4)


def test_a_soup_needs_backbone_stages_and_a_seed(paths):
    with pytest.raises(ValueError, match="train_blocks must be >= 1"):
        train_soup(PRESET, CFG.replace(train_blocks=0), paths, [0])
    with pytest.raises(ValueError, match="no seed"):
        train_soup(PRESET, CFG, paths, [])
