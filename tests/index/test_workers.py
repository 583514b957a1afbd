"""Extraction in several processes: the same descriptors, journaled by the parent, resumable after kill -9."""
import os
import shutil
import subprocess
import time

import numpy as np
import pytest

from imret.index.workers import ParallelExtractor
from imret.extractor import Extractor
from imret.index.store import Index
from imret.core.threads import ThreadPlan

from imret_cli import ONE_THREAD, command


def _children(pid: int) -> list[int]:
    """Live descendants of ``pid``, from /proc."""
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                kids += [int(d)] + _children(int(d))
    return kids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def folder(photoset, tmp_path_factory):
    d = tmp_path_factory.mktemp("workers") / "photos"
    d.mkdir()
    for p in photoset.db[:24]:
        shutil.copy(p, d)
    return d


def test_two_processes_give_the_in_process_descriptors_in_order(folder, tmp_path):
    paths = sorted(str(p) for p in folder.iterdir())[:10]
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    paths.insert(3, str(tmp_path / "bad.jpg"))
    ex = Extractor.from_preset("fast", device="cpu")
    heard = []
    par = ParallelExtractor(ex, ThreadPlan(intra=1, interop=1, workers=2, cpus=2), chunk=2)
    res = par.extract_paths(paths, on_result=lambda p, v: heard.append(p))
    ref = ex.extract_paths(paths)
    assert res.paths == ref.paths == [p for p in paths if not p.endswith("bad.jpg")]
    assert sorted(heard) == sorted(res.paths)
    assert [p for p, _ in res.failures] == [str(tmp_path / "bad.jpg")]
    np.testing.assert_allclose(res.descriptors, ref.descriptors, atol=1e-6)
    assert par.dim == ex.dim and par.head_digest() == ex.head_digest()


def test_kill_9_with_workers_resumes_and_leaves_no_orphans(folder, tmp_path):
    out = tmp_path / "killed.index"
    journal = str(out) + ".journal"
    args = ("index", folder, "--out", out, "--preset", "fast", "-q", "--workers", "2", "--threads", "1")
    proc = subprocess.Popen(command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ONE_THREAD)
    record = 8 + len(os.fsencode(str(folder / "distractor_000.jpg"))) + 4 * 1280 + 4
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(journal) and os.path.getsize(journal) > 6 * record:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    workers = _children(proc.pid)
    assert len(workers) >= 2
    proc.kill()
    proc.wait()
    deadline = time.time() + 30
    while time.time() < deadline and any(map(_alive, workers)):
        time.sleep(0.2)
    assert not any(map(_alive, workers)), "extraction processes outlived their killed parent"
    done = subprocess.run(command(*args), capture_output=True, text=True, timeout=600, env=ONE_THREAD)
    assert done.returncode == 0, done.stderr
    resumed = int(done.stderr.split("resumed ")[1].split()[0])
    assert 6 <= resumed < 24
    clean = tmp_path / "clean.index"
    subprocess.run(command("index", folder, "--out", clean, "--preset", "fast", "-q", "--workers", "1"),
                   check=True, capture_output=True, timeout=600, env=ONE_THREAD)
    a, b = Index.load(out), Index.load(clean)
    assert a.paths == b.paths and len(a) == 24
    np.testing.assert_allclose(a.descriptors, b.descriptors, atol=1e-6)
