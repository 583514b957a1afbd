"""Unsupervised training on real photos makes an attention head retrieve better.

The training set is the photo set's database folder as a user would have it:
unlabeled photos (20 originals, 60 distractors). The queries (crop, rotation,
scale, JPEG, occlusion, pasting, a second viewpoint) are held apart: training
sees only the database photos and its own augmentations of them. The head is
ICSA + NetVLAD; its untrained state is measured twice: as built (random
clusters) and after the k-means start that training makes before its first step,
so the gain asserted is that of the training steps themselves.
"""
import os

import pytest
import torch

from imret.config import ExtractionConfig, HeadConfig, Preset, WhiteningConfig
from imret.evaluation.datasets import load_dataset
from imret.heads import build_head
from imret.training import TrainConfig, build_bank, train
from imret.training.probe import dataset_maps, figures

pytestmark = pytest.mark.usefixtures("one_thread")

PRESET = Preset(name="icsa-netvlad-256", head=HeadConfig("netvlad", {"attention": "icsa", "clusters": 16, "dim": 128}),
                extraction=ExtractionConfig(max_size=256, scales=(1.0,)), whitening=WhiteningConfig(kind="none"))
CFG = TrainConfig(steps=300, batch=4, negatives=3, views=3, max_size=256, refresh_every=50, lr=1e-3, seed=0)


@pytest.fixture(scope="module")
def before_and_after(photoset):
    data = os.path.join(photoset.root, "db")
    bank = build_bank(PRESET, CFG, data, dtype=torch.float32)
    # the database's own feature maps are the training views 0: computed once
    photo = {bank.paths[i]: bank.maps([k])[0] for k, (i, v) in enumerate(bank.items) if v == 0}
    dataset = load_dataset(photoset.root)
    maps = dataset_maps(bank.extractor, dataset, db=[photo[os.path.abspath(p)] for p in dataset.db])
    head = build_head(PRESET.head, bank.extractor.backbone.out_channels)
    untrained = figures(head, maps)
    head.init_from_features([photo[p] for p in bank.paths], seed=CFG.seed)
    kmeans = figures(head, maps)
    res = train(PRESET, CFG, data, bank=bank)
    head.load_state_dict(res.head_state)
    return untrained, kmeans, figures(head, maps), res


def test_training_improves_retrieval_on_held_apart_queries(before_and_after):
    untrained, kmeans, trained, res = before_and_after
    print(f"\nICSA+NetVLAD mAP / R@1: untrained {untrained['mAP']:.1f} / {untrained['R@1']:.1f}, "
          f"k-means start {kmeans['mAP']:.1f} / {kmeans['R@1']:.1f}, "
          f"after {CFG.steps} steps {trained['mAP']:.1f} / {trained['R@1']:.1f}")
    # measured (seed 0, one thread): untrained 79.6 / 76.9, k-means start 77.9 / 74.4, trained 84.9 / 81.8;
    # with seeds 1 and 2 the gain over the untrained head is +3.1 / +2.4 and +4.7 / +4.1
    for before in (untrained, kmeans):
        assert trained["mAP"] >= before["mAP"] + 2.5
        assert trained["R@1"] >= before["R@1"] + 2.0
    n = len(res.losses) // 10
    assert sum(res.losses[-n:]) < 0.5 * sum(res.losses[:n])  # and the training loss fell
