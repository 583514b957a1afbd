"""Local-feature extraction is journaled: a killed run resumes without extracting again."""
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from imret.errors import IndexFileError
from imret.index.store import Index
from imret.local.features import LocalFeatures
from imret.local.journal import LocalJournal
from imret.local.store import LocalStore

from imret_cli import ONE_THREAD, command


def _features(rng, n, dim=112):
    d = rng.normal(size=(n, dim)).astype(np.float32)
    return LocalFeatures(rng.uniform(0, 300, (n, 2)).astype(np.float32), rng.uniform(0.25, 2, n).astype(np.float32),
                         rng.uniform(0, 9, n).astype(np.float32), d / np.linalg.norm(d, axis=1, keepdims=True),
                         (300, 417))


def _same(a: LocalFeatures, b: LocalFeatures) -> bool:
    return (a.size == b.size and np.array_equal(a.xy, b.xy) and np.array_equal(a.scales, b.scales)
            and np.array_equal(a.scores, b.scores) and np.array_equal(a.descriptors, b.descriptors))


def test_journal_round_trip_and_torn_tail(tmp_path):
    rng = np.random.default_rng(0)
    feats = [_features(rng, n) for n in (5, 0, 31)]
    path = str(tmp_path / "x.local.journal")
    j = LocalJournal(path, {"local": "fast"}).open()
    for i, f in enumerate(feats):
        j.append(f"/p/{i}.jpg", f)
    j.close()
    with open(path, "ab") as fh:  # the start of a record cut short by a kill
        fh.write(b"\x08\x00\x00\x00/p/9.jpg\xff\x00\x00\x00" + b"\x01" * 30)
    paths, got = LocalJournal(path, {"local": "fast"}).records()
    assert paths == ["/p/0.jpg", "/p/1.jpg", "/p/2.jpg"]
    assert all(_same(a, b) for a, b in zip(feats, got))
    with pytest.raises(IndexFileError, match="other settings"):
        LocalJournal(path, {"local": "delf"}).records()


class _Crash(Exception):
    pass


@pytest.mark.parametrize("pca_images", [200, 2], ids=["crash-before-the-codec", "crash-after-the-codec"])
def test_store_resumes_from_its_journal(pca_images, local_extractor, photos, tmp_path, one_thread, monkeypatch):
    names = ["astronaut", "coffee", "chelsea", "camera", "rocket", "china"]
    paths = []
    for n in names:
        p = tmp_path / f"{n}.png"
        from PIL import Image

        Image.fromarray(photos[n]).save(p)
        paths.append(str(p))
    ids = list(range(10, 16))
    journal = str(tmp_path / "db.local.journal")
    if pca_images != local_extractor.config.pca_images:  # the codec is learned, and journaled, after 2 images
        from imret.local.extract import LocalExtractor

        local_extractor = LocalExtractor(local_extractor.config.replace(pca_images=pca_images),
                                         local_extractor.attention_state(), device="cpu")
    calls = []
    real = type(local_extractor).extract

    def counting(self, image, bbox=None):
        calls.append(image)
        if len(calls) == 4 and crash[0]:
            raise _Crash  # the process dies while extracting the 4th image
        return real(self, image, bbox)

    monkeypatch.setattr(type(local_extractor), "extract", counting)
    crash = [True]
    with one_thread():
        with pytest.raises(_Crash):
            LocalStore.build(paths, ids, local_extractor, journal_path=journal)
        crash[0] = False
        calls.clear()
        if pca_images == 2:  # raw features of 2 images, the codec, then 1 image in the compact stored form
            assert LocalJournal.count(journal) == 3
            raw_bytes = len(LocalJournal(journal, {}).encode(real(local_extractor, paths[0])))
            assert os.path.getsize(journal) < 2.5 * raw_bytes
        resumed = LocalStore.build(paths, ids, local_extractor, journal_path=journal)
        assert calls == paths[3:]  # the three journaled images are not extracted again
        clean = LocalStore.build(paths, ids, local_extractor)
    assert resumed.ids == clean.ids == ids
    for i in ids:
        a, b = resumed.features(i), clean.features(i)
        assert np.array_equal(a.xy, b.xy) and np.allclose(a.descriptors, b.descriptors, atol=1e-6)


def test_kill_9_during_local_extraction_then_resume(photoset, copy_photos, tmp_path):
    folder = copy_photos(photoset.db[:10], tmp_path / "photos")
    out = tmp_path / "killed.index"
    local_journal = str(tmp_path / "killed.index.local.journal")
    args = ("index", folder, "--out", out, "--preset", "fast", "--local", "fast", "-q")
    proc = subprocess.Popen(command(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ONE_THREAD)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if LocalJournal.count(local_journal) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    done = subprocess.run(command(*args), capture_output=True, text=True, timeout=600, env=ONE_THREAD)
    assert done.returncode == 0, done.stderr
    assert "resuming the local features of " in done.stderr
    assert not os.path.exists(local_journal) and not os.path.exists(str(out) + ".journal")
    clean = tmp_path / "clean.index"
    subprocess.run(command(*args[:3], clean, *args[4:]), check=True, capture_output=True, timeout=600, env=ONE_THREAD)
    a, b = Index.load(out), Index.load(clean)
    assert a.paths == b.paths and a.local.ids == b.local.ids and len(a.local) == 10
    for i in a.local.ids:
        fa, fb = a.local.features(i), b.local.features(i)
        assert np.array_equal(fa.xy, fb.xy) and np.allclose(fa.descriptors, fb.descriptors, atol=1e-5)

