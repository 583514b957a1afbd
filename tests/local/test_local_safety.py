"""The local part of an index: damage refused by name, a half commit repaired (issue 16)."""
import os
import shutil

import h5py
import numpy as np
import pytest

from imret.cli import main
from imret.errors import IndexFileError
from imret.index.store import Index
from imret.local import local_path
from imret.local.config import LocalConfig
from imret.local.store import LocalStore

from test_local_store import _features


@pytest.fixture
def saved(tmp_path, one_thread):
    from imret.local.attention import Attention

    rng = np.random.default_rng(3)
    store = LocalStore(LocalConfig(), Attention(112).state_dict())
    with one_thread():
        store.add_features([(i, _features(rng, 300)) for i in range(3)])
    path = str(tmp_path / "x.index.local.h5")
    store.save(path)
    return path


def test_a_moved_keypoint_is_refused_naming_the_file_and_image(saved):
    with h5py.File(saved, "r+") as h:
        ds = h["features/1"]
        rows = ds[()]
        rows["x"][:10] += 40.0  # moves matches: silently changes inlier counts
        ds[...] = rows
    store = LocalStore.open(saved)
    assert store.features(0).xy.shape == (300, 2)  # the others still read
    with pytest.raises(IndexFileError) as err:
        store.features(1)
    assert err.value.path == saved and "image 1" in err.value.reason and "checksum" in err.value.reason


def test_a_scale_index_out_of_range_is_an_error_not_an_index_error(saved):
    with h5py.File(saved, "r+") as h:
        ds = h["features/2"]
        rows = ds[()]
        rows["scale"][0] = 200
        ds[...] = rows
        del ds.attrs["sha256"]  # as a file written before the digests
    with pytest.raises(IndexFileError, match="scale index out of range") as err:
        LocalStore.open(saved).many([0, 1, 2])
    assert err.value.path == saved


def test_a_changed_codec_or_a_torn_dataset_names_the_file(saved):
    with h5py.File(saved, "r+") as h:
        m = h["codec/pca_mean"]
        m[0] = m[0] + 1.0
    with pytest.raises(IndexFileError, match="checksum mismatch in the local-feature configuration") as err:
        LocalStore.open(saved)
    assert err.value.path == saved


def test_files_without_digests_still_open(saved):
    with h5py.File(saved, "r+") as h:
        del h.attrs["meta_sha256"]
        for k in h["features"]:
            del h["features"][k].attrs["sha256"]
    assert LocalStore.open(saved).features(2).xy.shape == (300, 2)


# ----------------------------------------------------------------------------- half commits

@pytest.fixture(scope="module")
def local_index(photoset, tmp_path_factory):
    """An index of three photos with 'fast' local features, and two more photos to add."""
    root = tmp_path_factory.mktemp("local-safety")
    db = [p for p in photoset.db if "distractor" in p]
    for name, chosen in (("a", db[:3]), ("b", db[3:5])):
        os.makedirs(root / name)
        for p in chosen:
            shutil.copy(p, root / name)
    out = str(root / "x.index")
    assert main(["index", str(root / "a"), "--out", out, "--preset", "fast", "--local", "fast", "-q"]) == 0
    return root, out


def _copy_index(base, tmp_path):
    """A copy of the index at ``base`` (both parts) in ``tmp_path``, and a spare copy of its local part."""
    out = str(tmp_path / "x.index")
    shutil.copy(base, out)
    shutil.copy(local_path(base), local_path(out))
    old_local = tmp_path / "old.local.h5"
    shutil.copy(local_path(out), old_local)
    return out, old_local


def test_an_add_killed_between_the_two_renames_is_repaired_by_the_rerun(local_index, tmp_path, capsys):
    root, base = local_index
    out, old_local = _copy_index(base, tmp_path)
    assert main(["add", out, str(root / "b"), "-q"]) == 0
    shutil.copy(old_local, local_path(out))  # the global part was renamed, the local one not yet
    half = Index.load(out)
    assert len(half) == 5 and half.local_missing == [3, 4]
    capsys.readouterr()
    assert main(["add", out, str(root / "b"), "-q"]) == 0  # the same command again
    assert "repaired: extracted the missing local features of 2 images" in capsys.readouterr().err
    again = Index.load(out)
    assert len(again) == 5 and again.local.ids == [0, 1, 2, 3, 4] and again.local_missing == []


def test_a_remove_killed_between_the_two_renames_is_repaired_by_the_rerun(local_index, tmp_path):
    root, base = local_index
    out, old_local = _copy_index(base, tmp_path)
    victim = Index.load(out).paths[1]
    assert main(["remove", out, victim]) == 0
    shutil.copy(old_local, local_path(out))  # local entries of the removed image are back
    with h5py.File(local_path(out), "r") as h:
        assert sorted(h["features"]) == ["0", "1", "2"]
    loaded = Index.load(out)
    assert loaded.local.ids == [0, 2]  # never served for an image that is gone
    assert main(["remove", out, victim]) == 1  # nothing left to remove, but the file is repaired
    with h5py.File(local_path(out), "r") as h:
        assert sorted(h["features"]) == ["0", "2"]


def _kill_at(monkeypatch, module, name):
    """Make ``module.name`` end the process's work there, as SIGKILL would (nothing after it runs)."""
    class Killed(BaseException):
        pass

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(module, name, killed)
    return Killed


def test_an_add_killed_after_the_index_rename_is_finished_by_the_next_load(local_index, tmp_path, monkeypatch):
    import imret.index.safety as safety

    root, base = local_index
    out, _ = _copy_index(base, tmp_path)
    killed = _kill_at(monkeypatch, safety, "promote_local")
    with pytest.raises(killed):
        main(["add", out, str(root / "b"), "-q"])
    monkeypatch.undo()
    # the index file names the new local generation, which only the .next file holds
    assert os.path.exists(safety.pending_local_path(local_path(out)))
    with h5py.File(local_path(out), "r") as h:
        assert sorted(h["features"]) == ["0", "1", "2"]
    loaded = Index.load(out)  # a plain load (a search) finishes the commit
    assert len(loaded) == 5 and loaded.local.ids == [0, 1, 2, 3, 4] and loaded.local_missing == []
    assert not os.path.exists(safety.pending_local_path(local_path(out)))
    with h5py.File(local_path(out), "r") as h:
        assert sorted(h["features"]) == ["0", "1", "2", "3", "4"]
    assert loaded.local.rows([4])[4].rows.shape[0] > 0  # read from the renamed file


def test_an_add_killed_before_the_index_rename_leaves_the_old_pair(local_index, tmp_path, monkeypatch, capsys):
    import imret.index.store as store

    root, base = local_index
    out, _ = _copy_index(base, tmp_path)
    before = open(out, "rb").read(), open(local_path(out), "rb").read()
    killed = _kill_at(monkeypatch, store, "write_container")
    with pytest.raises(killed):
        main(["add", out, str(root / "b"), "-q"])
    monkeypatch.undo()
    assert (open(out, "rb").read(), open(local_path(out), "rb").read()) == before
    pending = local_path(out) + ".next"
    assert os.path.exists(pending)  # written in full, but never committed
    loaded = Index.load(out)
    assert len(loaded) == 3 and loaded.local.ids == [0, 1, 2] and os.path.exists(pending)  # a reader leaves it
    assert main(["add", out, str(root / "b"), "-q"]) == 0
    assert Index.load(out).local.ids == [0, 1, 2, 3, 4] and not os.path.exists(pending)


def test_info_names_the_images_that_lack_local_features(local_index, tmp_path, capsys):
    root, base = local_index
    out, old_local = _copy_index(base, tmp_path)
    assert main(["add", out, str(root / "b"), "-q"]) == 0
    shutil.copy(old_local, local_path(out))  # a local part restored by hand from before the add
    capsys.readouterr()
    assert main(["info", out]) == 0
    said = capsys.readouterr().out
    assert "2 images lack local features (ids 3, 4)" in said
    assert main(["info", out, "--json"]) == 0
    import json

    assert json.loads(capsys.readouterr().out)["local"]["missing"] == [3, 4]
