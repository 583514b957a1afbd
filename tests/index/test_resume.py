"""Indexing killed with SIGKILL resumes where it stopped and gives the same index."""
import os
import shutil
import subprocess
import time

import numpy as np
import pytest

from imret.errors import IndexFileError
from imret.index.journal import Journal
from imret.index.store import Index

from imret_cli import command


@pytest.fixture(scope="module")
def folder(photoset, tmp_path_factory):
    d = tmp_path_factory.mktemp("resume") / "photos"
    d.mkdir()
    for p in photoset.db[:36]:
        shutil.copy(p, d)
    return d


def test_kill_9_then_resume_equals_a_clean_build(folder, tmp_path):
    out = tmp_path / "killed.index"
    journal = str(out) + ".journal"
    proc = subprocess.Popen(command("index", folder, "--out", out, "--preset", "fast", "-q"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    record = 8 + len(os.fsencode(str(folder / "distractor_000.jpg"))) + 4 * 1280 + 4
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(journal) and os.path.getsize(journal) > 10 * record:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.kill()  # SIGKILL: no clean-up code runs
    proc.wait()
    assert not out.exists()
    # resume with the same command
    done = subprocess.run(command("index", folder, "--out", out, "--preset", "fast", "-q"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "resuming the interrupted run" in done.stderr
    resumed = int(done.stderr.split("resumed ")[1].split()[0])
    assert 10 <= resumed < 36
    assert not os.path.exists(journal)
    clean = tmp_path / "clean.index"
    subprocess.run(command("index", folder, "--out", clean, "--preset", "fast", "-q"), check=True,
                   capture_output=True, timeout=600)
    a, b = Index.load(out), Index.load(clean)
    assert a.paths == b.paths and len(a) == 36
    assert np.allclose(a.descriptors, b.descriptors, atol=1e-6)
    assert (a.ids == b.ids).all()


def _journal(tmp_path, header=None):
    return Journal(str(tmp_path / "j.journal"), header or {"preset": "x"}, 4)


def test_journal_drops_a_torn_last_record(tmp_path):
    j = _journal(tmp_path).open()
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    for i, r in enumerate(rows):
        j.append(f"/p/{i}.jpg", r)
    j.close()
    with open(j.path, "ab") as f:  # a record cut short by the kill
        f.write(b"\x08\x00\x00\x00/p/3.jpg\x10\x00\x00\x00" + b"\x00" * 5)
    j2 = _journal(tmp_path)
    paths, desc = j2.read()
    assert paths == ["/p/0.jpg", "/p/1.jpg", "/p/2.jpg"]
    assert np.array_equal(desc, rows)
    # appending after the torn record first cuts it off
    j2.open().append("/p/3.jpg", np.ones(4))
    j2.close()
    paths, desc = _journal(tmp_path).read()
    assert paths[-1] == "/p/3.jpg" and np.array_equal(desc[-1], np.ones(4))


def test_journal_detects_a_corrupted_record(tmp_path):
    j = _journal(tmp_path).open()
    for i in range(3):
        j.append(f"/p/{i}.jpg", np.full(4, i, np.float32))
    j.close()
    data = bytearray(open(j.path, "rb").read())
    data[-10] ^= 0xFF  # inside the last record's vector
    open(j.path, "wb").write(bytes(data))
    paths, _ = _journal(tmp_path).read()
    assert paths == ["/p/0.jpg", "/p/1.jpg"]


def test_journal_of_other_settings_is_refused(tmp_path):
    _journal(tmp_path, {"preset": "a"}).open().close()
    with pytest.raises(IndexFileError, match="other settings"):
        _journal(tmp_path, {"preset": "b"}).read()
    (tmp_path / "j.journal").write_bytes(b"garbage")
    with pytest.raises(IndexFileError, match="not an imret journal"):
        _journal(tmp_path).read()
