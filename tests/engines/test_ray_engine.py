"""Distributed extraction with Ray: same index as the local loop; finished shards are skipped."""
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("ray")

from imret.engines.ray_engine import RayConfig, extract_with_ray, merge_shards, plan_shards  # noqa: E402
from imret.index.store import Index  # noqa: E402

from imret_cli import run_imret  # noqa: E402


def test_plan_shards_keeps_order():
    paths = [f"{i}.jpg" for i in range(10)]
    shards = plan_shards(paths, 4)
    assert [len(s) for s in shards] == [4, 4, 2] and sum(shards, []) == paths


def test_ray_index_equals_local_index_and_resumes(photoset, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in photoset.db[:10]:
        shutil.copy(p, photos)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 nope")
    local = tmp_path / "local.index"
    assert run_imret("index", photos, "--out", local, "--preset", "fast", "-q", timeout=900).returncode == 0
    distributed = tmp_path / "ray.index"
    r = run_imret("index", photos, "--out", distributed, "--preset", "fast", "-q", "--engine", "ray",
                  "--workers", "2", "--shard-size", "3", "--local", "fast", timeout=900)
    assert r.returncode == 0, r.stderr
    assert "4 shards extracted" in r.stderr and "broken.jpg" in r.stderr
    a, b = Index.load(local), Index.load(distributed)
    assert a.paths == b.paths and len(a) == 10
    assert np.allclose(a.descriptors, b.descriptors, atol=1e-5)
    assert not os.path.exists(str(distributed) + ".shards")
    # local features, asked for with the Ray engine, come for every image
    assert b.local is not None and b.local.ids == b.ids.tolist() and len(b.local.features(int(b.ids[0]))) > 50
    assert not os.path.exists(str(distributed) + ".local.journal")


def test_finished_shards_are_not_extracted_again(photoset, tmp_path):
    from imret.presets import get_preset

    paths = photoset.db[:6]
    shards = tmp_path / "shards"
    cfg = RayConfig(workers=1, shard_size=2)
    first = extract_with_ray(paths, get_preset("fast"), str(shards), cfg)
    assert first["extracted_shards"] == 3
    (second_shard,) = shards.glob("shard-000001-*.npz")
    second_shard.unlink()  # as if the run died before this shard was written
    (first_shard,) = shards.glob("shard-000000-*.npz")
    before = os.path.getmtime(first_shard)
    second = extract_with_ray(paths, get_preset("fast"), str(shards), cfg)
    assert second == {"shards": 3, "skipped_shards": 2, "extracted_shards": 1}
    assert os.path.getmtime(first_shard) == before
    ok, raw, failures = merge_shards(paths, str(shards), 2, 1280, get_preset("fast"))
    assert ok == paths and raw.shape == (6, 1280) and not failures
    # shards written with other settings are never taken for this run's
    other_size = extract_with_ray(paths, get_preset("fast"), str(shards), RayConfig(workers=1, shard_size=3))
    assert other_size == {"shards": 2, "skipped_shards": 0, "extracted_shards": 2}
    other_preset = extract_with_ray(paths[:2], get_preset("lite0-mac"), str(shards), cfg)
    assert other_preset["extracted_shards"] == 1
