import pytest
import torch
import torch.nn.functional as F

from imret.config import ConfigError
from imret.training import TrainConfig
from imret.training.losses import LOSSES


def unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_triplet_by_hand():
    # anchor (1,0); positive at 90°, negatives at 0° and 180°
    desc = unit([1, 0], [0, 1], [1, 0], [-1, 0])[None]
    loss = LOSSES.get("triplet")(0.1, 3, 2)
    d_ap = 2 ** 0.5
    expect = (max(0, d_ap - 0 + 0.1) + max(0, d_ap - 2 + 0.1)) / 2
    assert loss(desc, torch.zeros(1, 4, dtype=torch.long)).item() == pytest.approx(expect, abs=1e-6)
    # an easy tuple costs nothing
    easy = unit([1, 0], [1, 0.01], [-1, 0])[None]
    assert loss(easy, torch.zeros(1, 3, dtype=torch.long)).item() == 0.0


def test_triplet_margin_default_and_an_asymmetric_tuple_by_hand():
    loss = LOSSES.get("triplet")(None, 3, 2)
    assert loss.margin == 0.1  # what the shipped recipes train with (margin unset)
    # anchor, positive, three negatives: the anchor alone is compared with each negative
    desc = unit([1, 0], [0.6, 0.8], [0.8, 0.6], [0, 1], [-1, 0])[None]
    a, p, negs = desc[0, 0], desc[0, 1], desc[0, 2:]
    d_ap = (a - p).norm().item()
    expect = sum(max(0.0, d_ap - (a - n).norm().item() + 0.1) for n in negs) / 3
    assert loss(desc, torch.zeros(1, 5, dtype=torch.long)).item() == pytest.approx(expect, abs=1e-6)


def test_cross_entropy_is_over_cosines_scaled_by_16():
    loss = LOSSES.get("cross-entropy")(None, 2, 2)
    with torch.no_grad():
        loss.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.5]]))  # normalised before use
    desc = unit([1, 0], [0.6, 0.8])[None]
    cos = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    expect = F.cross_entropy(16 * cos, torch.tensor([0, 1]))
    assert loss(desc, torch.tensor([[0, 1]])).item() == pytest.approx(expect.item(), abs=1e-5)


def test_contrastive_is_cirtorchs():
    desc = unit([1, 0], [0.6, 0.8], [0.8, 0.6], [-1, 0])[None]
    loss = LOSSES.get("contrastive")(None, 3, 2)
    assert loss.margin == 0.7
    d = lambda a, b: (a - b).norm().item()  # noqa: E731
    a, p, n1, n2 = desc[0]
    expect = 0.5 * d(a, p) ** 2 + 0.5 * max(0, 0.7 - d(a, n1)) ** 2 + 0.5 * max(0, 0.7 - d(a, n2)) ** 2
    assert loss(desc, torch.zeros(1, 4, dtype=torch.long)).item() == pytest.approx(expect, abs=1e-6)


def test_cross_entropy_starts_from_the_class_means_and_learns():
    pool = unit([1, 0.1], [1, -0.1], [0.1, 1], [-0.1, 1])
    labels = torch.tensor([0, 0, 1, 1])
    loss = LOSSES.get("cross-entropy")(None, 2, 2)
    loss.prepare(pool, labels)
    assert torch.allclose(loss.weight, unit([1, 0], [0, 1]), atol=1e-6)
    right = loss(pool[None], labels[None])
    wrong = loss(pool[None], (1 - labels)[None])
    assert right < wrong
    right.backward()
    assert loss.weight.grad is not None and loss.weight.grad.abs().sum() > 0


def test_train_config_is_validated_once():
    with pytest.raises(ConfigError, match="unknown loss"):
        TrainConfig(loss="hinge")
    with pytest.raises(ConfigError, match="unknown training mode"):
        TrainConfig(mode="semi")
    with pytest.raises(ConfigError, match="views"):
        TrainConfig(views=1)
    with pytest.raises(ConfigError, match="steps"):
        TrainConfig(steps=0)
    cfg = TrainConfig(loss="contrastive", margin=0.5)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
