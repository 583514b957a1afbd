"""Query expansion and global-feature re-ranking search the whole database again, not
only the first shortlist; gfr's database side is computed over the whole index and kept.

The tiny case, by hand (3-d, unit rows; q = (1, 0, 0)):
  t = (0.95, 0.31225, 0)  q·t = 0.95     position 0
  d = (0.6, −0.8, 0)      q·d = 0.6      positions 1…99 (99 copies)
  p = (0.5, 0.86603, 0)   q·p = 0.5      position 100: ranked 101st, past a shortlist of 100
αQE (n=1, α=3): q' = L2(q + 0.95³ t) = (0.98930, 0.14594, 0): q'·t 0.98540, q'·p 0.62105,
q'·d 0.47680, so p comes back second. Average QE (n=1): q' = L2(q + t): q'·p 0.63064,
q'·d 0.46596. gfr (k=1, α=3): t's nearest other row is p (t·p = 0.74542), p's is t, d's a
copy of d; t' = L2(t + 0.74542³ p), p' = L2(p + 0.74542³ t), d' = d; the query as αQE's:
q'·t' 0.92904, q'·p' 0.76946, q'·d' 0.47680.
"""
import numpy as np
import pytest

from imret.config import IndexConfig, Preset, WhiteningConfig
from imret.index.store import Index
from imret.rerank import AugmentedRows, GlobalFeatureRerank, Pipeline
from imret.rerank.functional import merge_requery

T = [0.95, np.sqrt(1 - 0.95 ** 2), 0]
D = [0.6, -0.8, 0]
P = [0.5, np.sqrt(0.75), 0]


@pytest.fixture
def tiny():
    # the 99 copies of d are turned by up to 0.01 rad about the x axis, so that a graph index
    # (HNSW) sees distinct rows: q·d is unchanged, q'·d moves by < 1e-5
    e = np.linspace(0, 0.01, 99)
    ds = np.stack([np.full(99, 0.6), -0.8 * np.cos(e), 0.8 * np.sin(e)], 1)
    rows = np.concatenate([[T], ds, [P]]).astype(np.float32)
    q = np.array([[1, 0, 0]], np.float32)
    return q, rows


def _index(rows, kind="flat"):
    idx = Index(Preset(index=IndexConfig(kind=kind), whitening=WhiteningConfig(kind="none")), rows.shape[1])
    idx.add_descriptors([f"/p/{i:03d}.jpg" for i in range(len(rows))], rows)
    return idx


EXPECTED = {"aqe:n=1": (0.98540, 0.62105, 0.47680), "qe:n=1": (0.98742, 0.63064, 0.46596),
            "gfr:k=1": (0.92904, 0.76946, 0.47680)}


@pytest.mark.parametrize("spec", sorted(EXPECTED))
def test_a_positive_ranked_101st_comes_back_after_a_whole_database_requery(tiny, spec):
    q, rows = tiny
    first = np.argsort(-(q @ rows.T), axis=1, kind="stable")
    assert first[0, 0] == 0 and first[0, 100] == 100  # p is 101st
    ranks = Pipeline.parse(spec)(q, rows, first)
    assert ranks[0, :2].tolist() == [0, 100] and 1 <= ranks[0, 2] <= 99
    assert sorted(ranks[0].tolist()) == list(range(101))  # still a full ranking
    # the shortlist-only reading cannot bring it back
    assert Pipeline.parse(spec + ",scope=shortlist")(q, rows, first)[0, 100] == 100


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
@pytest.mark.parametrize("spec", sorted(EXPECTED))
def test_the_index_requeries_through_its_own_backend(tiny, spec, kind):
    q, rows = tiny
    hits = _index(rows, kind).search_processed(q, top=3, rerank=spec)[0]
    assert [h.id for h in hits[:2]] == [0, 100] and 1 <= hits[2].id <= 99
    np.testing.assert_allclose([h.score for h in hits], EXPECTED[spec], atol=2e-5)


def test_the_requery_goes_through_the_search_callable(tiny):
    """The expanded query is searched by the index's search path (here spied on), once per step."""
    q, rows = tiny
    idx = _index(rows)
    calls = []
    inner = idx._search_rows

    def spy(qq, r, k, scored=None):
        calls.append((qq.copy(), k))
        return inner(qq, r, k, scored)

    idx._search_rows = spy
    idx.search_processed(q, top=3, rerank="aqe:n=1,shortlist=100")
    assert len(calls) == 2 and calls[0][1] == 100 and calls[1][1] == 100  # first search, then the re-query
    np.testing.assert_allclose(calls[1][0][0], [0.98929, 0.14596, 0], atol=2e-5)


def test_merge_keeps_the_head_and_found_rows_by_new_score_then_the_old_tail():
    ranks = np.array([[4, 2, 7, 9, 1, -1]])
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, -np.inf]], np.float32)
    head_scores = np.array([[0.3, 0.95]], np.float32)  # rows 4 and 2 under the new query
    found = np.array([[2, 9, 5, -1]])
    found_scores = np.array([[0.95, 0.5, 0.4, -np.inf]], np.float32)
    r, s, old = merge_requery(ranks, scores, 2, head_scores, found, found_scores)
    # union {4, 2, 9, 5} by new score: 2 (0.95), 9 (0.5), 5 (0.4), 4 (0.3); then the old tail
    # without 9 (now in the head): 7, 1; width 6 kept
    assert r.tolist() == [[2, 9, 5, 4, 7, 1]]
    np.testing.assert_allclose(s, [[0.95, 0.5, 0.4, 0.3, 0.7, 0.5]])
    assert old.tolist() == [[1, -1, -1, 0, 2, 4]]
    # equal new scores: the lower row position first
    r, _, _ = merge_requery(ranks[:, :2], scores[:, :2], 2, np.array([[0.5, 0.5]], np.float32),
                            np.array([[3]]), np.array([[0.5]], np.float32))
    assert r.tolist() == [[2, 3]]


def test_gfr_database_rows_are_each_images_own_whole_database_neighbours(tiny):
    _, rows = tiny
    step = GlobalFeatureRerank(k=1)
    side = AugmentedRows.build(step, rows)
    assert side.neighbours[0, 0] == 100 and side.neighbours[100, 0] == 0 and 1 <= side.neighbours[1, 0] <= 99
    w = 0.74542 ** 3
    t, p = np.array(T), np.array(P)
    np.testing.assert_allclose(side.rows[0], (t + w * p) / np.linalg.norm(t + w * p), atol=1e-5)
    np.testing.assert_allclose(side.rows[100], (p + w * t) / np.linalg.norm(p + w * t), atol=1e-5)
    np.testing.assert_allclose(side.rows[1], D, atol=1e-4)  # (almost) a copy of itself: L2(d + d) = d
    # rank weights and self weight: L2(0.5·t + 2·p)
    fixed = AugmentedRows.build(GlobalFeatureRerank(k=1, weights=(2.0,), self_weight=0.5), rows)
    np.testing.assert_allclose(fixed.rows[0], (0.5 * t + 2 * p) / np.linalg.norm(0.5 * t + 2 * p), atol=1e-5)


def test_stored_gfr_rows_are_kept_current_and_used_by_searches(tmp_path, rng):
    q = np.array([[1, 0, 0]], np.float32)
    rows = rng.normal(size=(101, 3)).astype(np.float32)
    extra = rng.normal(size=(30, 3)).astype(np.float32)
    idx = _index(rows)
    step = GlobalFeatureRerank(k=2, alpha=1.0)
    idx.set_gfr(step)
    idx.add_descriptors([f"/q/{i}.jpg" for i in range(30)], extra)
    idx.remove(["/p/000.jpg", "/q/3.jpg"])
    idx.save(tmp_path / "g.index")
    loaded = Index.load(tmp_path / "g.index")
    scratch = AugmentedRows.build(step, loaded.descriptors)
    np.testing.assert_array_equal(loaded.gfr.neighbours, scratch.neighbours)
    np.testing.assert_allclose(loaded.gfr.rows, scratch.rows, atol=1e-6)
    assert loaded.info()["gfr"]["k"] == 2
    # a search with the stored parameters reads the stored rows (changed here to show it) …
    loaded.gfr.rows = np.tile(np.float32([0, 0, 1]), (len(loaded), 1))
    loaded.gfr.rows[7] = [1, 0, 0]
    assert loaded.search_processed(q, top=1, rerank="gfr:k=2,alpha=1")[0][0].id == int(loaded.ids[7])
    # … other parameters make their own over the whole index, as the exact pipeline does
    hits = loaded.search_processed(q, top=1, rerank="gfr:k=1")[0]
    assert hits[0].id == int(loaded.ids[Pipeline.parse("gfr:k=1")(q, loaded.descriptors)[0, 0]])


def test_scope_is_validated():
    from imret.config import ConfigError
    from imret.rerank import parse_steps

    with pytest.raises(ConfigError):
        parse_steps("aqe:scope=everything")
    (s,) = parse_steps("gfr:k=2,scope=shortlist")
    assert s.scope == "shortlist" and parse_steps(s.spec()) == (s,)
