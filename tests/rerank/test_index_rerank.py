"""Re-ranking through ``Index``: αDBA rows stored in the index file and kept up to date by
add/remove, and searches re-ranked by a pipeline."""
import numpy as np
import pytest

from imret.config import IndexConfig, Preset, WhiteningConfig
from imret.descriptor.whitening import l2_normalize
from imret.errors import IndexFileError
from imret.index.fileformat import read_container, write_container
from imret.index.store import Index
from imret.rerank import DBA, AugmentedRows, Pipeline, Shortlist

DIM = 24


def _index(kind="flat"):
    return Index(Preset(index=IndexConfig(kind=kind), whitening=WhiteningConfig(kind="none")), DIM)


def _clustered(rng, groups=40, per=5, noise=0.9):
    centres = rng.normal(size=(groups, DIM))
    x = np.repeat(centres, per, 0) + noise * rng.normal(size=(groups * per, DIM))
    q = centres + noise * rng.normal(size=(groups, DIM))
    paths = [f"/photos/g{i // per:03d}_{i % per}.jpg" for i in range(groups * per)]
    return paths, x.astype(np.float32), q.astype(np.float32)


def test_dba_rows_stay_equal_to_a_recomputation_through_add_remove_save_load(rng, tmp_path):
    paths, x, _ = _clustered(rng)
    idx = _index()
    idx.add_descriptors(paths[:50], x[:50])
    idx.set_dba(DBA(k=3, alpha=2.0))
    idx.add_descriptors(paths[50:120], x[50:120])
    idx.add_descriptors(paths[120:], x[120:])
    idx.remove(paths[10:30] + [paths[77]])
    idx.save(tmp_path / "a.index")
    meta, arrays = read_container(tmp_path / "a.index")
    assert meta["dba"] == {"k": 3, "alpha": 2.0}
    assert arrays["dba/rows"].shape == (len(idx), DIM) and arrays["dba/neighbours"].shape == (len(idx), 3)

    loaded = Index.load(tmp_path / "a.index")
    scratch = AugmentedRows.build(DBA(k=3, alpha=2.0), loaded.descriptors)
    np.testing.assert_array_equal(loaded.dba.neighbours, scratch.neighbours)
    np.testing.assert_allclose(loaded.dba.rows, scratch.rows, atol=1e-6)
    # and it keeps being maintained after loading
    loaded.add_descriptors(["/photos/new.jpg"], x[:1] + 0.01)
    np.testing.assert_allclose(loaded.dba.rows, DBA(k=3, alpha=2.0).augment(loaded.descriptors), atol=1e-6)
    assert loaded.info()["dba"] == {"k": 3, "alpha": 2.0}


def test_searches_of_an_index_with_dba_compare_queries_with_the_augmented_rows(rng):
    paths, x, q = _clustered(rng)
    idx = _index()
    idx.add_descriptors(paths, x)
    idx.set_dba(DBA(k=2))
    hits = idx.search(q[:5], top=7)
    aug = DBA(k=2).augment(idx.descriptors)
    sims = l2_normalize(q[:5]) @ aug.T
    for h, s in zip(hits, sims):
        order = np.argsort(-s, kind="stable")[:7]
        assert [hit.id for hit in h] == list(order)
        np.testing.assert_allclose([hit.score for hit in h], s[order], atol=1e-5)
    # asking for other αDBA parameters computes them for the search and leaves the stored rows alone
    other = idx.search(q[:5], top=7, rerank="dba:k=4")
    sims4 = l2_normalize(q[:5]) @ DBA(k=4).augment(idx.descriptors).T
    assert [[hit.id for hit in h] for h in other] == [list(np.argsort(-s, kind="stable")[:7]) for s in sims4]
    assert idx.dba.step == DBA(k=2)
    idx.set_dba(None)
    assert idx.search_rows() is idx.descriptors


def test_index_search_with_rerank_equals_the_pipeline_on_the_rows(rng):
    paths, x, q = _clustered(rng)
    idx = _index()
    idx.add_descriptors(paths, x)
    pipe = Pipeline.parse("dba:k=3,aqe:n=3,kreciprocal:k1=5,k2=2,shortlist=40")
    hits = idx.search(q, top=10, rerank=pipe)
    ranks = pipe(l2_normalize(q), idx.descriptors)
    assert [[h.id for h in hs] for hs in hits] == ranks[:, :10].tolist()


def test_rerank_raises_the_figure_on_clustered_descriptors(rng):
    # five noisy views per object: the setting expansion is made for
    paths, x, q = _clustered(rng, noise=1.1)
    idx = _index()
    idx.add_descriptors(paths, x)

    def precision_at_5(rerank):
        hits = idx.search(q, top=5, rerank=rerank)
        return np.mean([[h.path.split("/")[-1][:4] == f"g{i:03d}" for h in hs] for i, hs in enumerate(hits)])

    base = precision_at_5(None)
    for spec in ("aqe", "qe", "dba", "gfr", "kreciprocal", "dba,aqe"):
        assert precision_at_5(spec) >= base + 0.05, spec


def test_approximate_backends_rescore_their_candidates_against_the_augmented_rows(rng):
    paths, x, q = _clustered(rng)
    flat, hnsw = _index("flat"), _index("hnsw")
    for idx in (flat, hnsw):
        idx.add_descriptors(paths, x)
        idx.set_dba(DBA(k=3))
    a = flat.search(q, top=3, rerank="aqe")
    b = hnsw.search(q, top=3, rerank="aqe")
    same = np.mean([[h.id for h in u] == [h.id for h in v] for u, v in zip(a, b)])
    assert same >= 0.9
    np.testing.assert_allclose(a[0][0].score, b[0][0].score, atol=1e-5)


def test_empty_and_tiny_indexes(rng):
    idx = _index()
    idx.set_dba(DBA(k=3))
    assert idx.search(rng.normal(size=(2, DIM)).astype(np.float32), top=5, rerank="aqe,gfr,kreciprocal") == [[], []]
    idx.add_descriptors(["/a.jpg", "/b.jpg"], rng.normal(size=(2, DIM)).astype(np.float32))
    hits = idx.search(rng.normal(size=(1, DIM)).astype(np.float32), top=5, rerank="aqe,gfr,kreciprocal")
    assert sorted(h.path for h in hits[0]) == ["/a.jpg", "/b.jpg"]


def test_a_clone_changes_without_touching_the_original_dba(rng):
    paths, x, _ = _clustered(rng)
    idx = _index()
    idx.add_descriptors(paths[:100], x[:100])
    idx.set_dba(DBA(k=3))
    before = idx.dba.rows.copy()
    other = idx.clone()
    other.add_descriptors(paths[100:], x[100:])
    other.remove(paths[:20])
    np.testing.assert_array_equal(idx.dba.rows, before)
    assert len(other.dba.rows) == len(other) == 180


def test_a_damaged_dba_section_is_refused(rng, tmp_path):
    paths, x, _ = _clustered(rng, groups=4)
    idx = _index()
    idx.add_descriptors(paths, x)
    idx.set_dba(DBA(k=2))
    idx.save(tmp_path / "a.index")
    meta, arrays = read_container(tmp_path / "a.index")
    arrays = dict(arrays)
    arrays["dba/neighbours"] = np.full_like(arrays["dba/neighbours"], 999)
    write_container(tmp_path / "b.index", meta, arrays)
    with pytest.raises(IndexFileError, match="dba neighbour positions out of range"):
        Index.load(tmp_path / "b.index")


def test_shortlist_checks_its_shapes():
    with pytest.raises(ValueError, match="shapes disagree"):
        Shortlist(np.zeros((2, 4), np.float32), np.zeros((2, 3), np.int64), np.zeros((2, 2), np.float32))
