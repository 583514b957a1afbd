"""Writers of an index: locked, never writing nothing over something, repairing a half
commit, surviving a full disk (issue 16). Commands run in-process through ``imret.cli.main``."""
import os
import shutil
import threading
import time

import numpy as np
import pytest

from imret.cli import main
from imret.errors import IndexFileError
from imret.core import journal as journal_mod
from imret.index import fileformat
from imret.index.journal import Journal, RecordJournal
from imret.index.lock import remove_stale_temporaries, writer_lock
from imret.index.safety import add_exit_code, discard_finished_journal, tsv_field
from imret.index.store import Index, IndexReport
from imret.presets import get_preset


def _raw_index(tmp_path, n=5, dim=8):
    """An index of ``n`` made-up paths with random descriptors (no extraction)."""
    rng = np.random.default_rng(0)
    paths = [str(tmp_path / "photos" / f"p{i}.jpg") for i in range(n)]
    index = Index.from_raw(get_preset("fast").replace(whitening=get_preset("fast").whitening.replace(kind="none")),
                           dim, paths, rng.normal(size=(n, dim)).astype(np.float32), [str(tmp_path / "photos")])
    out = str(tmp_path / "x.index")
    index.save(out)
    return out, paths


@pytest.fixture(scope="module")
def photos(photoset, tmp_path_factory):
    """Two folders of real photos: a (3) and b (2), and an empty one."""
    root = tmp_path_factory.mktemp("safety")
    db = [p for p in photoset.db if "distractor" in p]
    for name, chosen in (("a", db[:3]), ("b", db[3:5]), ("empty", [])):
        os.makedirs(root / name)
        for p in chosen:
            shutil.copy(p, root / name)
    return root


# ----------------------------------------------------------------------------- the lock

def test_a_second_writer_fails_with_one_line_and_changes_nothing(tmp_path, capsys, monkeypatch):
    out, paths = _raw_index(tmp_path)
    before = open(out, "rb").read()
    monkeypatch.setenv("IMRET_LOCK_WAIT_S", "0.2")
    with writer_lock(out):
        assert main(["remove", out, paths[0]]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another imret process is changing this index" in err[0] and out in err[0]
    assert open(out, "rb").read() == before


def test_a_waiting_writer_goes_on_when_the_lock_is_released_and_sees_the_first_ones_work(tmp_path, monkeypatch):
    out, paths = _raw_index(tmp_path)
    monkeypatch.setenv("IMRET_LOCK_WAIT_S", "30")
    result = {}
    with writer_lock(out):
        t = threading.Thread(target=lambda: result.setdefault("rc", main(["remove", out, paths[1]])))
        t.start()
        time.sleep(0.3)
        assert t.is_alive()  # waiting, not writing
        first = Index.load(out)  # the first writer's change, saved while it holds the lock
        first.remove([paths[0]])
        first.save(out)
    t.join(30)
    assert result["rc"] == 0
    assert Index.load(out).paths == paths[2:]  # both removals kept


def test_the_lock_holder_removes_stale_temporaries(tmp_path):
    out, _ = _raw_index(tmp_path)
    own = tmp_path / ".imret-x.index-k1ll3d.tmp"
    old = tmp_path / ".imret-abc123.tmp"
    fresh = tmp_path / ".imret-def456.tmp"
    for p in (own, old, fresh):
        p.write_bytes(b"\0" * 1000)
    os.utime(old, (time.time() - 7200,) * 2)
    with writer_lock(out):
        pass
    assert not own.exists() and not old.exists()
    assert fresh.exists()  # may be another index's save in progress
    assert remove_stale_temporaries(out) == []


# ----------------------------------------------------------------------------- nothing over something

def test_indexing_an_empty_folder_never_replaces_an_index(photos, tmp_path, capsys):
    out = str(tmp_path / "x.index")
    assert main(["index", str(photos / "a"), "--out", out, "--preset", "fast", "-q"]) == 0
    before = open(out, "rb").read()
    assert main(["index", str(photos / "empty"), "--out", out, "--preset", "fast", "-q"]) == 1
    assert "no images found" in capsys.readouterr().err and open(out, "rb").read() == before
    nothing = str(tmp_path / "new.index")
    assert main(["index", str(photos / "empty"), "--out", nothing, "--preset", "fast", "-q"]) == 1
    assert "nothing written" in capsys.readouterr().err and not os.path.exists(nothing)


def test_add_exits_non_zero_when_every_file_failed():
    assert add_exit_code(IndexReport(indexed=0, skipped=[("a.jpg", "corrupt")])) == 1
    assert add_exit_code(IndexReport(indexed=0)) == 1  # nothing found at all
    assert add_exit_code(IndexReport(indexed=0, already=3)) == 0
    assert add_exit_code(IndexReport(indexed=1, skipped=[("a.jpg", "corrupt")])) == 0


# ----------------------------------------------------------------------------- journals

def test_a_zero_byte_or_torn_header_journal_resumes_as_empty(tmp_path):
    p = tmp_path / "j.journal"
    for data in (b"", b"IMRE", journal_mod.MAGIC + (500).to_bytes(4, "little") + b'{"dim": 4'):
        p.write_bytes(data)
        j = Journal(str(p), {"preset": "x"}, 4)
        assert j.read()[0] == []
        j.open()
        j.append("/a.jpg", np.ones(4, np.float32))
        j.close()
        assert Journal(str(p), {"preset": "x"}, 4).read()[0] == ["/a.jpg"]
    p.write_bytes(b"garbage that is no journal")
    with pytest.raises(IndexFileError, match="not an imret journal"):
        Journal(str(p), {"preset": "x"}, 4).read()


def test_the_journal_of_a_finished_add_is_discarded_not_called_other_settings(tmp_path):
    out, paths = _raw_index(tmp_path)
    index = Index.load(out)
    jp = out + ".journal"
    j = Journal(jp, {"mode": "add", "sources": ["/elsewhere"]}, 8).open()
    for p in paths[3:]:
        j.append(p, np.ones(8, np.float32))
    j.close()
    assert discard_finished_journal(index, jp) and not os.path.exists(jp)
    j = Journal(jp, {"mode": "add"}, 8).open()
    j.append(str(tmp_path / "not-indexed.jpg"), np.ones(8, np.float32))
    j.close()
    assert not discard_finished_journal(index, jp) and os.path.exists(jp)  # an unfinished run: kept
    assert RecordJournal.paths_in(jp) == [str(tmp_path / "not-indexed.jpg")]


class _FillingDisk:
    """A binary file that takes ``room`` writes and then fails as a full disk does (the
    journal writes its header in one write, and each record in one)."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, data):
        if self.room == 0:
            raise OSError(28, "No space left on device")
        self.room -= 1
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("room", [0, 2])
def test_a_full_disk_while_indexing_is_one_line_and_the_rerun_resumes(photos, tmp_path, capsys, monkeypatch, room):
    out = str(tmp_path / "x.index")
    real_open = open
    monkeypatch.setattr(journal_mod, "open", lambda p, mode="r", *a, **k: _FillingDisk(real_open(p, mode, *a, **k),
                                                                                     room), raising=False)
    assert main(["index", str(photos / "a"), "--out", out, "--preset", "fast", "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"imret: error: {out}.journal: cannot write the journal (No space left on device)")
    assert not os.path.exists(out)
    monkeypatch.undo()
    assert main(["index", str(photos / "a"), "--out", out, "--preset", "fast", "-q"]) == 0
    err = capsys.readouterr().err
    assert "indexed 3" in err and ("resumed 1 " in err) == (room == 2)  # the header and one record were written
    assert len(Index.load(out)) == 3 and not os.path.exists(out + ".journal")


def test_a_full_disk_while_saving_keeps_the_old_index(tmp_path, capsys, monkeypatch):
    out, paths = _raw_index(tmp_path)
    before = open(out, "rb").read()

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileformat.os, "fsync", no_space)
    assert main(["remove", out, paths[0]]) == 1
    monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"imret: error: {out}: cannot write (No space left on device); the file there before is unchanged"]
    assert open(out, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["x.index", "x.index.lock"]  # no temporary file left


# ----------------------------------------------------------------------------- header values

def test_ids_beyond_next_id_are_refused(tmp_path):
    out, _ = _raw_index(tmp_path)
    index = Index.load(out)
    index.next_id = 2  # the next add would hand out ids 2, 3, 4 again
    index.save(out)
    with pytest.raises(IndexFileError, match="next id 2, largest id 4"):
        Index.load(out)


def test_skip_log_fields_are_escaped():
    assert tsv_field("a\tb\nc\\d\re") == "a\\tb\\nc\\\\d\\re"
    assert tsv_field("plain name.jpg") == "plain name.jpg"
