"""Training the attention network by the DELF recipe (backbone frozen, unsupervised views)."""
import numpy as np
import pytest
import torch
from PIL import Image

from imret.errors import WeightsError
from imret.local.config import get_local_config
from imret.local.extract import LocalExtractor
from imret.local.train import AttentionTrainConfig, load_attention, save_attention, train_attention


@pytest.fixture(scope="module")
def folder(photos, tmp_path_factory):
    root = tmp_path_factory.mktemp("attention-data")
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera"):
        Image.fromarray(photos[name]).save(root / f"{name}.jpg", quality=92)
    return str(root)


def test_training_lowers_the_loss_and_changes_what_attention_favours(folder, photos, tmp_path, one_thread):
    config = get_local_config("fast")
    cfg = AttentionTrainConfig(steps=60, batch=8, views=3, max_size=192, lr=3e-3)
    with one_thread():
        res = train_attention(folder, config, cfg, device="cpu")
    assert len(res.losses) == 60 and not res.skipped
    first, last = np.mean(res.losses[:10]), np.mean(res.losses[-10:])
    assert last < 0.5 * first, (first, last)  # measured: 1.1 → 0.0001 (five instances are easy)
    assert np.mean(res.accuracies[-10:]) > np.mean(res.accuracies[:10])
    path = tmp_path / "att.pt"
    save_attention(path, res.state, config, cfg, res.losses)
    cfg_back, state = load_attention(path)
    assert cfg_back == config and all(torch.equal(state[k], v) for k, v in res.state.items())
    untrained = LocalExtractor(config, device="cpu")
    trained = LocalExtractor(config, state, device="cpu", backbone=untrained.backbone)
    img = photos["astronaut"][::2, ::2].copy()
    with one_thread():
        a, b = untrained.extract(img), trained.extract(img)
    assert len(b) > 100 and np.isfinite(b.scores).all()
    # the trained network ranks locations differently from the feature norm it started from
    overlap = len({tuple(p) for p in a.xy[:100].round()} & {tuple(p) for p in b.xy[:100].round()})
    assert overlap < 90  # measured: 38 of the 100 best keypoints in common


def test_attention_files_that_are_not_are_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"format": "something else"}, bad)
    with pytest.raises(WeightsError, match=r"bad\.pt: not an imret attention file \(format imret-attention/1\)$"):
        load_attention(bad)
    with pytest.raises(WeightsError, match="no such attention file"):
        load_attention(tmp_path / "missing.pt")


def test_attention_files_carry_a_checked_digest_and_older_ones_without_one_still_load(tmp_path):
    from imret.core.digest import weights_digest
    from imret.local.config import LocalConfig

    config, cfg = get_local_config("fast"), AttentionTrainConfig(steps=1)
    state = {"w": torch.tensor([0.5, -1.0])}
    save_attention(tmp_path / "a.pt", state, config, cfg, [1.0], half=True)
    obj = torch.load(tmp_path / "a.pt", weights_only=True)
    assert obj["state"]["w"].dtype == torch.float16 and obj["digest"] == weights_digest(obj["state"])
    obj["state"] = {"w": torch.tensor([0.5, 1.0]).half()}
    torch.save(obj, tmp_path / "altered.pt")
    with pytest.raises(WeightsError, match=r"altered\.pt: weights do not match their digest"):
        load_attention(tmp_path / "altered.pt")
    del obj["digest"]  # as 'imret train --local' wrote them before 2026-12-01
    torch.save(obj, tmp_path / "old.pt")
    assert load_attention(tmp_path / "old.pt")[0] == config
    obj["local"] = {**LocalConfig().to_dict(), "no_such_field": 1}
    torch.save(obj, tmp_path / "future.pt")
    with pytest.raises(WeightsError, match=r"future\.pt: imret attention file for a local configuration this imret "
                                           r"cannot build: .*no_such_field"):
        load_attention(tmp_path / "future.pt")


def test_every_local_config_on_the_shipped_stage_gets_the_shipped_attention():
    from imret.index.indexer import local_extractor
    from imret.local.config import LOCAL_CONFIGS, LocalConfig
    from imret.local.train import SHIPPED_ATTENTION, load_attention, shipped_attention, shipped_attention_state

    trained_for, state = load_attention(shipped_attention(SHIPPED_ATTENTION))
    for name, cfg in LOCAL_CONFIGS.items():
        assert (cfg.backbone, cfg.attention_hidden) == (trained_for.backbone, trained_for.attention_hidden)
        ex, _ = local_extractor(name)
        assert ex.config == cfg  # the named pyramid and recipe, not the training run's
        got = ex.attention_state()
        assert all(torch.equal(got[k], state[k].float()) for k in state), name
    # another width cannot take those weights: it stays untrained
    assert shipped_attention_state(LocalConfig(attention_hidden=64)) is None
