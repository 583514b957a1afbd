"""The parts an Index is made of: catalog, vector store, sidecars (and their protocol)."""
import numpy as np
import pytest

from imret.config import IndexConfig, Preset, WhiteningConfig
from imret.index.catalog import Catalog
from imret.index.store import Index
from imret.index.vectors import VectorStore
from imret.rerank import DBA


def test_catalog_selects_by_id_path_and_folder_and_keeps_order():
    cat = Catalog()
    paths = ["/a/x.jpg", "/a/b/y.jpg", "/a/bb.jpg", "/c/z.jpg"]
    cat.append(cat.new_ids(4), paths)
    assert cat.next_id == 4 and cat.position("/a/bb.jpg") == 2 and "/c/z.jpg" in cat
    # "/a/b" is a folder: it holds y.jpg, not the sibling file "/a/bb.jpg"
    assert cat.select(["/a/b"]).tolist() == [False, True, False, False]
    assert cat.select([3, 99, "/a/x.jpg"]).tolist() == [True, False, False, True]
    cat.keep(np.array([False, True, True, False]))
    assert cat.ids.tolist() == [1, 2] and cat.paths == ["/a/b/y.jpg", "/a/bb.jpg"]
    assert cat.position("/a/bb.jpg") == 1 and "/a/x.jpg" not in cat
    assert cat.positions(np.array([[2, 0], [-1, 1]])).tolist() == [[1, -1], [-1, 0]]
    assert cat.new_ids(2).tolist() == [4, 5]  # ids are never handed out twice
    with pytest.raises(ValueError, match="ids must grow"):
        cat.append(np.array([2]), ["/d.jpg"])
    again = Catalog.read({**cat.header(), "roots": ["/a"]}, cat.arrays())
    assert again.ids.tolist() == [1, 2] and again.paths == cat.paths and again.next_id == 4
    assert again.roots == ["/a"] and again.position("/a/b/y.jpg") == 0


def test_vector_store_answers_row_positions_and_survives_a_round_trip():
    cat = Catalog()
    vs = VectorStore(IndexConfig(kind="flat"), 3, ids_of=lambda: cat.ids)
    rows = vs.process(np.array([[3, 4, 0], [0, 0, 2], [1, 0, 0]], np.float32))
    assert np.allclose(rows, [[0.6, 0.8, 0], [0, 0, 1], [1, 0, 0]])
    cat.append(np.array([10, 11, 12]), ["a", "b", "c"])
    vs.append(np.array([10, 11, 12]), rows)
    scores, pos = vs.search(np.array([[1, 0, 0]], np.float32), 2, cat.positions)
    assert pos.tolist() == [[2, 0]] and np.allclose(scores, [[1.0, 0.6]])
    keep = np.array([False, True, True])
    cat.keep(keep)
    vs.keep(keep, np.array([10]))
    scores, pos = vs.search(np.array([[1, 0, 0]], np.float32), 2, cat.positions)
    assert pos.tolist() == [[1, 0]] and np.allclose(scores, [[1.0, 0.0]])
    back = VectorStore.read(vs.cfg, vs.header(), vs.arrays(), lambda: cat.ids)
    assert np.array_equal(back.rows, vs.rows) and back.backend.ids.tolist() == [11, 12]
    with pytest.raises(ValueError, match="disagree"):
        VectorStore.read(vs.cfg, vs.header(), vs.arrays(), lambda: np.array([11]))


class Counter:
    """A toy sidecar: per image, its id; checks what the protocol hands it."""

    name = "counter"

    def __init__(self, ids):
        self.value = list(ids)

    def added(self, ids, rows):
        assert len(rows) == len(self.value) + len(ids)
        return Counter(self.value + list(ids))

    def removed(self, keep, removed_ids, rows):
        assert len(keep) == len(self.value) and len(rows) == keep.sum()
        assert set(removed_ids) == {i for i, k in zip(self.value, keep) if not k}
        return Counter([i for i, k in zip(self.value, keep) if k])

    def header(self):
        return None

    def arrays(self):
        return {}

    def copy(self):
        return self


def test_every_sidecar_follows_adds_and_removes_and_a_clone_keeps_the_old_state(rng):
    idx = Index(Preset(index=IndexConfig(kind="flat"), whitening=WhiteningConfig(kind="none")), 8)
    x = rng.normal(size=(6, 8)).astype(np.float32)
    idx.add_descriptors([f"/p/{i}.jpg" for i in range(4)], x[:4])
    idx.sidecars["counter"] = Counter(idx.ids)
    idx.set_dba(DBA(k=2))
    before = idx.clone()
    idx.add_descriptors(["/p/4.jpg", "/p/5.jpg"], x[4:])
    idx.remove(["/p/1.jpg"])
    assert idx.sidecars["counter"].value == idx.ids.tolist() == [0, 2, 3, 4, 5]
    fresh = DBA(k=2).augment(idx.descriptors)
    assert np.allclose(idx.dba.rows, fresh, atol=1e-6)  # incremental = from scratch
    assert before.sidecars["counter"].value == [0, 1, 2, 3] and len(before.dba.rows) == 4
