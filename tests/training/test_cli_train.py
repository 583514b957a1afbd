"""``imret train`` and ``imret index/eval --checkpoint`` through the real entry point."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

from imret.extractor import Extractor
from imret.index.store import Index
from imret.training import load_checkpoint, model_from_checkpoint

from imret_cli import run_imret

TRAIN = ["--preset", "lite0-dagf", "--steps", "3", "--batch", "2", "--negatives", "1", "--views", "2",
         "--max-size", "96", "--checkpoint-every", "2", "--seed", "3", "-q"]


def imret(*args, check=True):
    return run_imret(*args, check=check, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def checkpoint(few_photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-train") / "dagf.pt"
    proc = imret("train", few_photos, "--out", out, *TRAIN)
    assert "wrote" in proc.stderr and "loss" in proc.stderr
    return str(out)


def test_train_writes_a_checkpoint_and_resumes_only_when_asked(checkpoint, few_photos):
    ck = load_checkpoint(checkpoint)
    assert ck.step == 3 and ck.preset.name == "lite0-dagf" and ck.train.seed == 3 and ck.train.max_size == 96
    again = imret("train", few_photos, "--out", checkpoint, *TRAIN, check=False)
    assert again.returncode == 1 and "--resume" in again.stderr
    bad = imret("train", few_photos, "--out", checkpoint + ".x", *TRAIN, "--loss", "hinge", check=False)
    assert bad.returncode == 1 and "unknown loss" in bad.stderr
    more = checkpoint + ".more"
    shutil.copy(checkpoint, more)
    imret("train", few_photos, "--out", more, *TRAIN[:3], "4", *TRAIN[4:], "--resume")
    assert load_checkpoint(more).step == 4


def test_index_with_a_checkpoint_searches_with_the_trained_head(checkpoint, few_photos, tmp_path):
    out = tmp_path / "trained.index"
    imret("index", few_photos, "--out", out, "--checkpoint", checkpoint, "-q")
    index = Index.load(out)
    ck = load_checkpoint(checkpoint)
    assert index.preset.head.name == "dagf"
    assert sorted(index.head_state) == sorted(ck.head)
    assert json.loads(imret("info", out, "--json").stdout)["head_weights"] == "own"
    assert all(torch.equal(index.head_state[k], ck.head[k]) for k in ck.head)
    # the stored rows are the trained model's descriptors
    preset, head_state = model_from_checkpoint(checkpoint)
    ex = Extractor(preset, device="cpu", head_state=head_state)
    k = 0
    assert np.allclose(index.descriptors[k], ex.extract(index.paths[k]), atol=1e-5)
    untrained = Extractor(preset, device="cpu")
    assert not np.allclose(index.descriptors[k], untrained.extract(index.paths[k]), atol=1e-4)
    hits = json.loads(imret("search", out, index.paths[1], "--json", "--top", "2").stdout)["results"]
    assert hits[0]["path"] == index.paths[1] and hits[0]["score"] > 0.999


def test_eval_with_a_checkpoint(checkpoint, few_photos, tmp_path):
    root = tmp_path / "instances"
    photos = sorted(os.listdir(few_photos))[:2]
    for i, name in enumerate(photos):
        (root / f"thing{i}").mkdir(parents=True)
        shutil.copy(os.path.join(few_photos, name), root / f"thing{i}" / "a.png")
        shutil.copy(os.path.join(few_photos, name), root / f"thing{i}" / "b.png")
    res = json.loads(imret("eval", "--dataset", root, "--checkpoint", checkpoint, "--json", "-q").stdout)
    assert res["figures"]["mAP"] == pytest.approx(100.0)


def test_index_adapt_trains_then_indexes_with_the_adapted_head(few_photos, tmp_path):
    out = tmp_path / "adapted.index"
    proc = imret("index", few_photos, "--out", out, "--preset", "lite0-regional", "--adapt", "--adapt-steps", "2",
                 "-q", "--no-whitening")
    assert "adapting the regional head" in proc.stderr and "wrote" in proc.stderr
    assert "verification linked " in proc.stderr and " instances in 6 photos" in proc.stderr  # mined positives
    index = Index.load(str(out))
    ex = Extractor(index.preset, device="cpu", head_state=index.head_state)
    shipped = Extractor(index.preset, device="cpu")
    assert ex.head_digest() != shipped.head_digest()  # the index keeps the adapted head, not the shipped one
    assert "(weights of its own, stored in the index: from --adapt" in imret("info", out).stdout
    plain = tmp_path / "shipped.index"
    imret("index", few_photos, "--out", plain, "--preset", "lite0-regional", "-q", "--no-whitening")
    assert "(the preset's shipped weights, stored in the index)" in imret("info", plain).stdout
    assert json.loads(imret("info", plain, "--json").stdout)["head_weights"] == "shipped"
    assert index.search_image(index.paths[0], top=1)[0].path == index.paths[0]
    bad = imret("index", few_photos, "--out", tmp_path / "x.index", "--adapt", "-q", check=False)
    assert bad.returncode == 1 and "no learnable head" in bad.stderr
    bad = imret("index", few_photos, "--out", tmp_path / "x.index", "--preset", "lite0-regional", "--adapt",
                "--adapt-blend", "2", "-q", check=False)
    assert bad.returncode == 1 and "--adapt-blend: expected a weight in (0, 1]" in bad.stderr
    bad = imret("index", few_photos, "--out", tmp_path / "x.index", "--adapt-steps", "5", "-q", check=False)
    assert bad.returncode == 1 and "--adapt-steps only applies with --adapt" in bad.stderr
    assert not (tmp_path / "x.index").exists()


def test_train_mine_is_saved_with_the_checkpoint_and_refused_for_local_attention(few_photos, tmp_path):
    out = tmp_path / "mined.pt"
    proc = imret("train", few_photos, "--out", out, *TRAIN[:-1], "--mine")
    assert "verification linked" in proc.stderr
    assert load_checkpoint(str(out)).train.mine is True
    bad = imret("train", few_photos, "--out", tmp_path / "local.pt", "--local", "--mine", "-q", check=False)
    assert bad.returncode == 2 and "not --mine" in bad.stderr


def test_from_shipped_starts_from_the_shipped_head_and_keeps_its_clusters(few_photos, tmp_path):
    from imret.heads.trained import shipped_for
    from imret.presets import get_preset

    # lr 1e-9: one Adam step moves no weight by more than ~1e-9, so the checkpoint shows the start
    args = ["--preset", "lite0-icsa-netvlad", "--steps", "1", "--batch", "2", "--negatives", "1", "--views", "2",
            "--max-size", "160", "--lr", "1e-9", "--seed", "3", "-q"]
    imret("train", few_photos, "--out", tmp_path / "shipped.pt", *args, "--from-shipped")
    imret("train", few_photos, "--out", tmp_path / "data.pt", *args)
    shipped = shipped_for(get_preset("lite0-icsa-netvlad")).float_state()
    from_shipped = load_checkpoint(str(tmp_path / "shipped.pt")).head
    from_data = load_checkpoint(str(tmp_path / "data.pt")).head
    assert sorted(from_shipped) == sorted(shipped)
    assert all(torch.allclose(from_shipped[k].float(), shipped[k], atol=1e-6) for k in shipped)
    # without it, the clusters are fit on these photos
    assert not all(torch.allclose(from_data[k].float(), shipped[k], atol=1e-3) for k in shipped)
    bad = imret("train", few_photos, "--out", tmp_path / "gem.pt", "--preset", "default", "--from-shipped", "-q",
                check=False)
    assert bad.returncode == 1 and "--from-shipped" in bad.stderr and "'default'" in bad.stderr
    assert not os.path.exists(tmp_path / "gem.pt")
    local = imret("train", few_photos, "--out", tmp_path / "local.pt", "--local", "--from-shipped", "-q", check=False)
    assert local.returncode == 1 and "--from-shipped" in local.stderr and "--local" in local.stderr
    assert not os.path.exists(tmp_path / "local.pt")
