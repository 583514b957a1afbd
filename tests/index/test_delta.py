"""The service's adds and deletes write only what changed (a delta log), crash-safely."""
import os
import shutil

import numpy as np
import pytest

from imret.errors import IndexFileError
from imret.index import delta
from imret.index.store import Index
from imret.presets import get_preset
from imret.rerank import DBA
from imret.service.holder import IndexHolder

DIM = 8


def _preset():
    p = get_preset("fast")
    return p.replace(whitening=p.whitening.replace(kind="none"))


@pytest.fixture
def saved(tmp_path):
    rng = np.random.default_rng(0)
    paths = [str(tmp_path / "photos" / f"p{i}.jpg") for i in range(6)]
    index = Index.from_raw(_preset(), DIM, paths, rng.normal(size=(6, DIM)).astype(np.float32),
                           [str(tmp_path / "photos")])
    index.set_dba(DBA(k=2))
    path = str(tmp_path / "x.index")
    index.save(path)
    return path


def _add(holder, tmp_path, n, seed):
    raw = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    paths = [str(tmp_path / "photos" / f"new{seed}-{i}.jpg") for i in range(n)]
    return holder.update(lambda idx: idx.add_descriptors(paths, raw))


def _same(a: Index, b: Index):
    assert a.ids.tolist() == b.ids.tolist() and a.paths == b.paths and a.next_id == b.next_id
    assert a.roots == b.roots
    np.testing.assert_array_equal(np.asarray(a.descriptors), np.asarray(b.descriptors))
    np.testing.assert_allclose(a.dba.rows, b.dba.rows, atol=1e-6)
    q = np.random.default_rng(9).normal(size=(3, DIM)).astype(np.float32)
    ra, rb = a.search(q, top=5), b.search(q, top=5)
    assert [[h.id for h in r] for r in ra] == [[h.id for h in r] for r in rb]


def test_adds_and_deletes_append_to_the_log_and_a_load_replays_them(saved, tmp_path):
    before = open(saved, "rb").read()
    holder = IndexHolder(Index.load(saved), saved)
    _add(holder, tmp_path, 2, 1)
    new = holder.update(lambda idx: idx.remove([1]))
    assert open(saved, "rb").read() == before  # the index file was not rewritten
    assert os.path.exists(delta.delta_path(saved))
    loaded = Index.load(saved)
    assert loaded.delta_records == 2 and loaded.info()["delta_records"] == 2
    assert loaded.ids.tolist() == [0, 2, 3, 4, 5, 6, 7]
    _same(loaded, new)


def test_a_full_save_folds_the_log_in(saved, tmp_path):
    holder = IndexHolder(Index.load(saved), saved)
    new = _add(holder, tmp_path, 3, 2)
    cli = Index.load(saved)  # 'imret add' / 'remove' load the log too, and save in full
    cli.save(saved)
    assert not os.path.exists(delta.delta_path(saved))
    _same(Index.load(saved), new)


def test_a_torn_last_record_is_a_change_that_was_never_answered(saved, tmp_path):
    holder = IndexHolder(Index.load(saved), saved)
    first = _add(holder, tmp_path, 1, 3)
    _add(holder, tmp_path, 1, 4)
    log = delta.delta_path(saved)
    os.truncate(log, os.path.getsize(log) - 3)
    _same(Index.load(saved), first)


def test_a_log_of_an_older_save_is_never_replayed(saved, tmp_path):
    holder = IndexHolder(Index.load(saved), saved)
    _add(holder, tmp_path, 2, 5)
    log = delta.delta_path(saved)
    kept = str(tmp_path / "old.delta")
    shutil.copy(log, kept)
    full = Index.load(saved)
    full.save(saved)
    shutil.copy(kept, log)  # a full save killed after its rename, before deleting the log
    again = Index.load(saved)
    assert again.delta_records == 0 and len(again) == 8
    _same(again, full)


def test_a_log_past_its_share_of_the_file_is_compacted(saved, tmp_path, monkeypatch):
    monkeypatch.setattr(delta, "COMPACT_MIN_BYTES", 0)
    monkeypatch.setattr(delta, "COMPACT_FRACTION", 0.0)
    before = open(saved, "rb").read()
    holder = IndexHolder(Index.load(saved), saved)
    new = _add(holder, tmp_path, 1, 6)
    assert open(saved, "rb").read() != before and not os.path.exists(delta.delta_path(saved))
    _same(Index.load(saved), new)


def test_a_failed_append_leaves_no_change_behind(saved, tmp_path, monkeypatch):
    holder = IndexHolder(Index.load(saved), saved)
    _add(holder, tmp_path, 1, 7)
    size = os.path.getsize(delta.delta_path(saved))

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(delta.os, "fsync", no_space)
    with pytest.raises(IndexFileError, match="cannot write .*No space left"):
        _add(holder, tmp_path, 1, 8)
    monkeypatch.undo()
    assert os.path.getsize(delta.delta_path(saved)) == size
    assert len(Index.load(saved)) == 7 and len(holder.index) == 7


def test_local_features_of_added_images_are_in_the_log(tmp_path):
    from imret.local.attention import Attention
    from imret.local.config import LocalConfig
    from imret.local.store import LocalStore

    rng = np.random.default_rng(1)

    def random_features(rng, n):
        from imret.local.features import LocalFeatures

        x = rng.normal(size=(n, 112)).astype(np.float32)
        x[:, :8] += 3 * rng.normal(size=(1, 8))
        return LocalFeatures(rng.uniform(0, 300, (n, 2)).astype(np.float32),
                             rng.choice(LocalConfig().scales, n).astype(np.float32),
                             np.sort(rng.uniform(1, 50, n))[::-1].astype(np.float32),
                             x / np.linalg.norm(x, axis=1, keepdims=True), (300, 400))

    paths = [str(tmp_path / f"p{i}.jpg") for i in range(3)]
    index = Index.from_raw(_preset(), DIM, paths, rng.normal(size=(3, DIM)).astype(np.float32), [str(tmp_path)])
    index.local = LocalStore(LocalConfig(), Attention(112).state_dict())
    index.local.add_features([(i, random_features(rng, 300)) for i in range(3)])
    path = str(tmp_path / "l.index")
    index.save(path)
    holder = IndexHolder(Index.load(path), path)
    extra = random_features(rng, 200)

    def add(idx):
        idx.add_descriptors([str(tmp_path / "q.jpg")], rng.normal(size=(1, DIM)).astype(np.float32))
        idx.local.add_features([(3, extra)])

    new = holder.update(add)
    loaded = Index.load(path)
    assert loaded.delta_records == 1 and loaded.local.ids == [0, 1, 2, 3] and loaded.local_missing == []
    a, b = loaded.local.features(3), new.local.features(3)
    np.testing.assert_array_equal(a.xy, b.xy)
    np.testing.assert_array_equal(a.descriptors, b.descriptors)


def test_another_process_s_logged_change_is_seen_by_readers(saved, tmp_path):
    reader, writer = IndexHolder(Index.load(saved), saved), IndexHolder(Index.load(saved), saved)
    _add(writer, tmp_path, 1, 10)
    assert len(reader.index) == 7 and reader.reloads == 1
