"""A short label-free training run on real Paris photos improves the head's Hard mAP.

The data is ``../shared/data/paris6k-sub`` (125 Paris6k photos, revisited
Easy/Medium/Hard ground truth). Training is label-free (each photo its own
instance, strong augmentations as positives): the ground truth is read only to
score, so the photos' queries are fair to score on. Small and single-scale (256 px)
so that backbone maps and training fit in a couple of minutes on 2 cores.
"""
import os

import pytest
import torch

from imret.config import ExtractionConfig, HeadConfig, Preset, WhiteningConfig
from imret.evaluation.datasets import load_dataset
from imret.heads import build_head
from imret.training import TrainConfig, build_bank, train
from imret.training.probe import dataset_maps, figures

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "paris6k-sub")

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not os.path.isdir(DATA), reason="needs ../shared/data/paris6k-sub")]

PRESET = Preset(name="dagf-256", head=HeadConfig("dagf", {"max_mask": False}),
                extraction=ExtractionConfig(max_size=256, scales=(1.0,)), whitening=WhiteningConfig(kind="none"))
CFG = TrainConfig(steps=240, batch=4, negatives=2, views=3, max_size=256, refresh_every=80, lr=5e-4, seed=0)


@pytest.fixture(scope="module")
def before_and_after():
    bank = build_bank(PRESET, CFG, os.path.join(DATA, "jpg"), dtype=torch.float32)
    photo = {bank.paths[i]: bank.maps([k])[0] for k, (i, v) in enumerate(bank.items) if v == 0}
    dataset = load_dataset(DATA)
    maps = dataset_maps(bank.extractor, dataset, db=[photo[os.path.abspath(p)] for p in dataset.db])
    head = build_head(PRESET.head, bank.extractor.backbone.out_channels)
    untrained = figures(head, maps)
    res = train(PRESET, CFG, None, bank=bank)
    head.load_state_dict(res.head_state)
    return untrained, figures(head, maps)


def test_label_free_training_improves_hard_map_on_paris(before_and_after):
    untrained, trained = before_and_after
    print("\nDAGF @256 px Easy/Medium/Hard mAP: untrained "
          + "/".join(f"{untrained[k]['mAP']:.1f}" for k in ("easy", "medium", "hard"))
          + ", trained " + "/".join(f"{trained[k]['mAP']:.1f}" for k in ("easy", "medium", "hard")))
    assert trained["hard"]["mAP"] >= untrained["hard"]["mAP"] + MARGIN


# measured (seed 0, one thread, this recipe): Hard 35.7 untrained → 38.9 trained (+3.2); the
# shorter run (120 steps at lr 1e-3) gave +1.6 on one build and −4.6 on another: too short to rely on
MARGIN = 2.0
