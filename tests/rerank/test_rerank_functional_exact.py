"""Exact, hand-computed cases for ``imret.rerank.functional``: every expected value below is
worked out by hand in the comments (no re-implementation of the function under test)."""
import numpy as np
import pytest

from imret.rerank import functional as F


@pytest.fixture(params=[None, 1, 2], ids=["chunk-1024", "chunk-1", "chunk-2"])
def chunk(request, monkeypatch):
    """Run a case with the module's row chunk as shipped and cut to 1 and 2 rows, so that
    the chunked loops are exercised on hand-sized inputs."""
    if request.param is not None:
        monkeypatch.setattr(F, "_CHUNK", request.param)
    return request.param


def unit(*rows):
    x = np.asarray(rows, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_gather_gives_zero_rows_for_padding_and_float32():
    rows = np.array([[1, 2], [3, 4], [5, 6]], np.float64)
    out, valid = F.gather(rows, np.array([[2, -1], [0, 1]]))
    assert out.dtype == np.float32
    assert out.tolist() == [[[5, 6], [0, 0]], [[1, 2], [3, 4]]]
    assert valid.tolist() == [[True, False], [True, True]]
    # no rows at all: zero rows of the right width, nothing valid
    out, valid = F.gather(np.zeros((0, 3), np.float32), np.array([[-1, -1]]))
    assert out.shape == (1, 2, 3) and not out.any() and valid.tolist() == [[False, False]]


def test_similarity_weights_clip_negatives_and_raise_to_alpha():
    s = np.array([-0.5, 0.0, 0.5, 1.0])
    w = F.similarity_weights(s, 2.0)
    assert w.dtype == np.float32 and w.tolist() == [0.0, 0.0, 0.25, 1.0]
    assert F.similarity_weights(s, 0.0).tolist() == [1.0, 1.0, 1.0, 1.0]  # 0⁰ = 1: plain averaging
    assert F.similarity_weights(s, 1.0).tolist() == [0.0, 0.0, 0.5, 1.0]


def test_weighted_sum_by_hand():
    x = np.array([[1.0, 0.0]], np.float32)
    nbr = np.array([[[0.0, 1.0], [0.0, 1.0], [1.0, 1.0]]], np.float32)
    valid = np.array([[True, False, True]])
    sims = np.array([[0.5, 0.9, -0.2]], np.float32)
    # 2·(1, 0) + 0.5·(0, 1) + (the invalid neighbour: nothing) + max(0, −0.2)·(1, 1) = (2, 0.5)
    np.testing.assert_allclose(F.weighted_sum(x, nbr, valid, sims, 1.0, self_weight=2.0), unit([2, 0.5]), atol=1e-6)
    # α = 2: 0.25·(0, 1)
    np.testing.assert_allclose(F.weighted_sum(x, nbr, valid, sims, 2.0), unit([1, 0.25]), atol=1e-6)
    # rank weights (longer than the list: the first 3 count) replace the similarity weights:
    # (1, 0) + 3·(0, 1) + 5·(1, 1) = (6, 8)
    rw = np.array([3.0, 4.0, 5.0, 7.0])
    np.testing.assert_allclose(F.weighted_sum(x, nbr, valid, sims, 1.0, rank_weights=rw), unit([6, 8]), atol=1e-6)


def test_alpha_qe_and_average_qe_by_hand():
    q = np.array([[1.0, 0.0]], np.float32)
    nbr = unit([0.6, 0.8], [0, 1], [-1, 0]).astype(np.float32)[None]
    valid = np.array([[True, True, True]])
    # αQE, α = 1: q + 0.6·(0.6, 0.8) + 0·(0, 1) + 0·(−1, 0) = (1.36, 0.48)
    np.testing.assert_allclose(F.alpha_qe(q, nbr, valid, 1.0), unit([1.36, 0.48]), atol=1e-6)
    # average QE of the first two: (1, 0) + (0.6, 0.8) + (0, 1) = (1.6, 1.8); (−1, 0) is not valid
    valid2 = np.array([[True, True, False]])
    avg = F.average_qe(q, nbr, valid2)
    np.testing.assert_allclose(avg, unit([1.6, 1.8]), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(avg, axis=1), 1, atol=1e-6)
    # with all three: (0.6, 1.8), the mean keeps the sum's direction
    np.testing.assert_allclose(F.average_qe(q, nbr, valid), unit([0.6, 1.8]), atol=1e-6)
    # two queries with 1 and 2 valid neighbours: each its own mean
    q2 = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    nbr2 = np.array([[[0.0, 1.0], [5.0, 5.0]], [[1.0, 0.0], [0.6, 0.8]]], np.float32)
    valid2 = np.array([[True, False], [True, True]])
    np.testing.assert_allclose(F.average_qe(q2, nbr2, valid2), unit([1, 1], [1.6, 1.8]), atol=1e-6)


def test_pair_sims_by_hand():
    rows = np.array([[1, 0], [0, 1], [0.6, 0.8]], np.float32)
    a = np.array([[0.6, 0.8], [1, 0]], np.float32)
    s = F.pair_sims(a, rows, np.array([[2, 0], [1, -1]]))
    assert s.dtype == np.float32
    np.testing.assert_allclose(s, [[1.0, 0.6], [0.0, -np.inf]], atol=1e-6)


def test_top_k_orders_by_score_then_column_and_pads():
    sims = np.array([[0.1, 0.5, 0.5, 0.9], [0.3, -np.inf, 0.2, 0.1]], np.float32)
    p, s = F.top_k(sims, 3)
    assert p.tolist() == [[3, 1, 2], [0, 2, 3]] and p.dtype == np.int64
    np.testing.assert_allclose(s, [[0.9, 0.5, 0.5], [0.3, 0.2, 0.1]])
    # k = C: all columns sorted, −inf → position −1
    p, s = F.top_k(sims, 4)
    assert p.tolist() == [[3, 1, 2, 0], [0, 2, 3, -1]]
    # k > C: padded with −1 / −inf
    p, s = F.top_k(sims[:, :2], 3)
    assert p.tolist() == [[1, 0, -1], [0, -1, -1]]
    assert s[0].tolist() == [0.5, pytest.approx(0.1), -np.inf] and s.dtype == np.float32
    # k = 1 and a column → position map
    pos = np.array([[40, 41, 42, 43], [50, 51, 52, 53]])
    assert F.top_k(sims, 1, pos)[0].tolist() == [[43], [50]]
    assert F.top_k(sims, 2, pos)[0].tolist() == [[43, 41], [50, 52]]


def test_knn_by_hand_with_exclusion_and_padding(chunk):
    rows = np.array([[1, 0], [0.8, 0.6], [0, 1]], np.float32)
    nbr, sims = F.knn(rows, rows, 2, exclude=np.array([0, 1, 2]))
    # row 0: 0.8 (row 1), 0 (row 2); row 1: 0.8 (row 0), 0.6 (row 2); row 2: 0.6 (row 1), 0 (row 0)
    assert nbr.tolist() == [[1, 2], [0, 2], [1, 0]]
    np.testing.assert_allclose(sims, [[0.8, 0], [0.8, 0.6], [0.6, 0]], atol=1e-6)
    nbr, sims = F.knn(rows[:1], rows, 4)  # no exclusion: itself first; 3 rows for 4 places
    assert nbr.tolist() == [[0, 1, 2, -1]]
    np.testing.assert_allclose(sims, [[1, 0.8, 0, -np.inf]], atol=1e-6)


def test_augment_rows_by_hand(chunk):
    rows = np.array([[1, 0], [0.8, 0.6], [0, 1]], np.float32)
    nbr = np.array([[1, 2], [0, 2], [1, -1]])
    sims = np.array([[0.8, 0.0], [0.8, 0.6], [0.6, -np.inf]], np.float32)
    out = F.augment_rows(rows, nbr, sims, 1.0)
    # row 0: (1, 0) + 0.8·(0.8, 0.6) + 0 = (1.64, 0.48); row 1: (0.8, 0.6) + 0.8·(1, 0) + 0.6·(0, 1)
    # = (1.6, 1.2); row 2: (0, 1) + 0.6·(0.8, 0.6) = (0.48, 1.36)
    np.testing.assert_allclose(out, unit([1.64, 0.48], [1.6, 1.2], [0.48, 1.36]), atol=1e-6)
    # which: only row 2, self weight 0.5, rank weights (2, 9): 0.5·(0, 1) + 2·(0.8, 0.6) = (1.6, 1.7)
    out = F.augment_rows(rows, nbr, sims, 1.0, which=np.array([2]), self_weight=0.5,
                         rank_weights=np.array([2.0, 9.0]))
    np.testing.assert_allclose(out, unit([1.6, 1.7]), atol=1e-6)


def test_knn_after_add_by_hand(chunk):
    rows = np.array([[1, 0], [0, 1], [0.8, 0.6], [0.6, 0.8]], np.float32)
    # lists of the two old rows among themselves (k = 2): 0 → [1, pad], 1 → [0, pad]
    nbr = np.array([[1, -1], [0, -1]])
    sims = np.array([[0.0, -np.inf], [0.0, -np.inf]], np.float32)
    out_nbr, out_sims, changed = F.knn_after_add(rows, 2, nbr, sims)
    # row 0: 2 (0.8), 3 (0.6); row 1: 3 (0.8), 2 (0.6); row 2: 3 (0.96), 0 (0.8); row 3: 2 (0.96), 1 (0.8)
    assert out_nbr.tolist() == [[2, 3], [3, 2], [3, 0], [2, 1]]
    np.testing.assert_allclose(out_sims, [[0.8, 0.6], [0.8, 0.6], [0.96, 0.8], [0.96, 0.8]], atol=1e-6)
    assert changed.tolist() == [0, 1, 2, 3]
    # adding a row far from both old rows' lists changes neither
    rows2 = np.array([[1, 0], [0.8, 0.6], [-1, 0]], np.float32)
    nbr2, sims2 = np.array([[1], [0]]), np.array([[0.8], [0.8]], np.float32)
    out_nbr, out_sims, changed = F.knn_after_add(rows2, 2, nbr2, sims2)
    assert out_nbr.tolist() == [[1], [0], [1]] and changed.tolist() == [2]
    np.testing.assert_allclose(out_sims, [[0.8], [0.8], [-0.8]], atol=1e-6)


def test_knn_after_remove_by_hand(chunk):
    rows = np.array([[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1]], np.float32)
    # k = 2 lists of the four rows: 0 → 1 (0.8), 2 (0.6); 1 → 2 (0.96), 0 (0.8); 2 → 1 (0.96), 3 (0.8);
    # 3 → 2 (0.8), 1 (0.6)
    nbr = np.array([[1, 2], [2, 0], [1, 3], [2, 1]])
    sims = np.array([[0.8, 0.6], [0.96, 0.8], [0.96, 0.8], [0.8, 0.6]], np.float32)
    keep = np.array([True, False, True, True])  # remove row 1: positions 0, 2, 3 → 0, 1, 2
    out_nbr, out_sims, redo = F.knn_after_remove(rows[keep], keep, nbr, sims)
    # every kept list held row 1: all searched again among (1, 0), (0.6, 0.8), (0, 1)
    assert redo.tolist() == [0, 1, 2]
    assert out_nbr.tolist() == [[1, 2], [2, 0], [1, 0]]
    np.testing.assert_allclose(out_sims, [[0.6, 0.0], [0.8, 0.6], [0.8, 0.0]], atol=1e-6)
    # removing row 3: only the list holding it (row 2's) is searched again: 1 (0.96), 0 (0.6)
    keep = np.array([True, True, True, False])
    out_nbr, out_sims, redo = F.knn_after_remove(rows[keep], keep, nbr, sims)
    assert redo.tolist() == [2]
    assert out_nbr.tolist() == [[1, 2], [2, 0], [1, 0]]
    np.testing.assert_allclose(out_sims, [[0.8, 0.6], [0.96, 0.8], [0.96, 0.6]], atol=1e-6)
    # removing row 0 (last in row 1's list only... and first in row 0's own): rows 1, 2, 3 → 0, 1, 2;
    # row 1's list held 0: searched again → 2 (0.96), 3 (0.6) = new 1, 2; rows 2 and 3 renumbered
    keep = np.array([False, True, True, True])
    out_nbr, out_sims, redo = F.knn_after_remove(rows[keep], keep, nbr, sims)
    assert redo.tolist() == [0]
    assert out_nbr.tolist() == [[1, 2], [0, 2], [1, 0]]
    np.testing.assert_allclose(out_sims, [[0.96, 0.6], [0.96, 0.8], [0.8, 0.6]], atol=1e-6)


def test_knn_after_remove_of_a_single_row_with_a_padded_list():
    rows = np.array([[1.0, 0.0]], np.float32)
    out_nbr, out_sims, redo = F.knn_after_remove(rows, np.array([True]), np.array([[-1, -1]]),
                                                 np.full((1, 2), -np.inf, np.float32))
    assert out_nbr.tolist() == [[-1, -1]] and redo.tolist() == [] and np.isneginf(out_sims).all()


def test_knn_after_remove_keeps_padding():
    rows = np.array([[1, 0], [0, 1], [0.6, 0.8]], np.float32)
    nbr, sims = np.array([[1, -1], [0, -1], [1, 0]]), np.array([[0, -np.inf], [0, -np.inf], [0.8, 0.6]], np.float32)
    keep = np.array([True, True, False])
    out_nbr, _, redo = F.knn_after_remove(rows[keep], keep, nbr, sims)
    assert out_nbr.tolist() == [[1, -1], [0, -1]] and redo.tolist() == []


def test_merge_requery_with_a_head_past_the_width():
    # head = K: no old tail; found rows beyond K are cut
    ranks = np.array([[5, 6]])
    scores = np.array([[0.9, 0.8]], np.float32)
    r, s, old = F.merge_requery(ranks, scores, 2, np.array([[0.1, 0.7]], np.float32),
                                np.array([[8, 6, -1]]), np.array([[0.95, 0.7, -np.inf]], np.float32))
    assert r.tolist() == [[8, 6]] and old.tolist() == [[-1, 1]]
    np.testing.assert_allclose(s, [[0.95, 0.7]])
    # fewer results than K: padded with −1 / −inf
    r, s, old = F.merge_requery(np.array([[3, -1, -1]]), np.array([[0.5, -np.inf, -np.inf]], np.float32), 1,
                                np.array([[0.4]], np.float32), np.array([[-1]]), np.array([[-np.inf]], np.float32))
    assert r.tolist() == [[3, -1, -1]] and old.tolist() == [[0, -1, -1]]
    assert s[0, 0] == pytest.approx(0.4) and np.isneginf(s[0, 1:]).all()


def test_merge_requery_with_a_head_longer_than_the_ranking():
    # head 3 on a ranking of 2: the head is the whole ranking
    r, s, old = F.merge_requery(np.array([[4, 5]]), np.array([[0.9, 0.8]], np.float32), 3,
                                np.array([[0.2, 0.6]], np.float32), np.array([[7]]), np.array([[0.4]], np.float32))
    assert r.tolist() == [[5, 7]] and old.tolist() == [[1, -1]]
    np.testing.assert_allclose(s, [[0.6, 0.4]])


def test_resort_is_stable_and_carries_the_other_arrays():
    scores = np.array([[0.2, 0.9, 0.2, 0.5]], np.float32)
    ids = np.array([[10, 11, 12, 13]])
    s, r = F.resort(scores, ids)
    assert s.tolist() == [[pytest.approx(0.9), 0.5, pytest.approx(0.2), pytest.approx(0.2)]]
    assert r.tolist() == [[11, 13, 10, 12]]
    # 40 scores, every third 1, the rest 0: each group keeps its order (a quicksort would not)
    scores = np.zeros((1, 40), np.float32)
    scores[0, ::3] = 1
    _, r = F.resort(scores, np.arange(40)[None])
    assert r[0].tolist() == list(range(0, 40, 3)) + [i for i in range(40) if i % 3]


# -- global-feature re-ranking within the shortlist ---------------------------------------------------

C0, C1, C2 = [1.0, 0.0], [0.6, 0.8], [0.0, 1.0]  # c0·c1 = 0.6, c0·c2 = 0, c1·c2 = 0.8


def test_refine_shortlist_by_hand():
    q = np.array([[0.8, 0.6]], np.float32)
    cand = np.array([[C0, C1, C2]], np.float32)
    valid = np.ones((1, 3), bool)
    q_new, scores = F.refine_shortlist(q, cand, valid, 1, 2.0, None, 0.5)
    # k = 1, α = 2, w₀ = 0.5. Nearest other: c0 → c1 (0.6), c1 → c2 (0.8), c2 → c1 (0.8):
    # c0' = 0.5·c0 + 0.36·c1 = (0.716, 0.288); c1' = 0.5·c1 + 0.64·c2 = (0.3, 1.04);
    # c2' = 0.5·c2 + 0.64·c1 = (0.384, 1.012). The query's neighbour is the first of its
    # shortlist, c0 (q·c0 = 0.8): q' = 0.5·q + 0.64·c0 = (1.04, 0.3)
    qn = unit([1.04, 0.3])[0]
    np.testing.assert_allclose(q_new, [qn], atol=1e-6)
    expected = unit([0.716, 0.288], [0.3, 1.04], [0.384, 1.012]) @ qn  # 0.99484, 0.53260, 0.60000
    np.testing.assert_allclose(scores, [expected], atol=1e-6)
    assert scores.dtype == np.float32


def test_refine_shortlist_with_rank_weights_an_invalid_entry_and_k_past_the_shortlist():
    q = np.array([[0.8, 0.6]], np.float32)
    cand = np.array([[C0, C1, C2]], np.float32)
    valid = np.array([[True, True, False]])  # c2 is no result: neither a neighbour nor scored
    # k = 5 on a shortlist of 3: at most 2 others; weights (1, 0.5, 9): the first two count.
    # c0's neighbours: c1 (weight 1), then nothing valid; c1's: c0 (1). w₀ = 2:
    # c0' = 2·c0 + c1 = (2.6, 0.8); c1' = 2·c1 + c0 = (2.2, 1.6); the query's: c0 (1), c1 (0.5):
    # q' = 2·q + c0 + 0.5·c1 = (2.9, 1.6)
    q_new, scores = F.refine_shortlist(q, cand, valid, 5, 1.0, np.array([1.0, 0.5, 9.0]), 2.0)
    qn = unit([2.9, 1.6])[0]
    np.testing.assert_allclose(q_new, [qn], atol=1e-6)
    np.testing.assert_allclose(scores[0, :2], unit([2.6, 0.8], [2.2, 1.6]) @ qn, atol=1e-6)
    assert np.isneginf(scores[0, 2])


def test_refine_shortlist_of_one_image_only_normalises():
    q = np.array([[1.6, 1.2]], np.float32)  # not unit: comes back as (0.8, 0.6)
    cand = np.array([[[2.0, 0.0]]], np.float32)
    q_new, scores = F.refine_shortlist(q, cand, np.ones((1, 1), bool), 3, 3.0, None, 1.0)
    np.testing.assert_allclose(q_new, [[0.8, 0.6]], atol=1e-6)
    np.testing.assert_allclose(scores, [[0.8]], atol=1e-6)


# -- k-reciprocal re-ranking --------------------------------------------------------------------------

# q = (1, 0), c1 at 30°, c2 at 90°: q·c1 = 0.86603, q·c2 = 0, c1·c2 = 0.5. Lists, self first:
# q: q, c1, c2; c1: c1, q, c2; c2: c2, c1, q. k1 = 1 (top 2; its half, max(1, round(0.5)) = 1):
# R(q) = {q, c1}, R(c1) = {c1, q}, R(c2) = {c2} (c1's top 2 does not hold c2); the expansion adds
# nothing. Weights exp(−(2 − 2s)): exp(0) = 1 and exp(−0.26795) = 0.76494, so
# V(q) = (1, 0.76494, 0)/1.76494 = (0.56659, 0.43341, 0), V(c1) = (0.43341, 0.56659, 0), V(c2) = (0, 0, 1).
KR_Q = np.array([[1.0, 0.0]], np.float32)
KR_CAND = np.array([[[np.cos(np.pi / 6), 0.5], [0.0, 1.0]]], np.float32)


def test_k_reciprocal_scores_by_hand_without_query_expansion():
    # k2 = 1: V as it is. Σmin(V(q), V(c1)) = 0.86682 → Jaccard 1 − 0.86682/1.13318 = 0.23506;
    # V(q), V(c2) share nothing → Jaccard 1. λ = 0.5: d(c1) = 0.5·0.23506 + 0.5·(1 − 0.86603)
    # = 0.18452; d(c2) = 0.5·1 + 0.5·1 = 1
    s = F.k_reciprocal_scores(KR_Q, KR_CAND, np.ones((1, 2), bool), 1, 1, 0.5)
    np.testing.assert_allclose(s, [[1 - 0.18452, 0.0]], atol=1e-4)
    # λ = 0: the Jaccard part alone; λ = 1: the cosine alone
    np.testing.assert_allclose(F.k_reciprocal_scores(KR_Q, KR_CAND, np.ones((1, 2), bool), 1, 1, 0.0),
                               [[1 - 0.23506, 0.0]], atol=1e-4)
    np.testing.assert_allclose(F.k_reciprocal_scores(KR_Q, KR_CAND, np.ones((1, 2), bool), 1, 1, 1.0),
                               [[0.86603, 0.0]], atol=1e-4)


def test_k_reciprocal_scores_by_hand_with_query_expansion():
    # k2 = 2: each V averaged with its nearest other's: V(q) = V(c1) = (0.5, 0.5, 0);
    # V(c2) = (V(c2) + V(c1))/2 = (0.21671, 0.28330, 0.5). Jaccard(q, c1) = 1 − 1/1 = 0;
    # Σmin(V(q), V(c2)) = 0.5 → Jaccard 1 − 0.5/1.5 = 2/3. λ = 0.5: d(c1) = 0.5·0.13397 = 0.06699,
    # d(c2) = 0.5·2/3 + 0.5·1 = 0.83333
    s = F.k_reciprocal_scores(KR_Q, KR_CAND, np.ones((1, 2), bool), 1, 2, 0.5)
    np.testing.assert_allclose(s, [[1 - 0.06699, 1 - 0.83333]], atol=1e-4)


def test_k_reciprocal_scores_leave_invalid_entries_out():
    # the second entry is no result, though its row (10° from q) would be q's nearest: only
    # {q, c1} count, with the V(q), V(c1) above
    close = [[[np.cos(np.pi / 18), np.sin(np.pi / 18)]]]
    cand = np.concatenate([KR_CAND[:, :1], close], 1).astype(np.float32)
    s = F.k_reciprocal_scores(KR_Q, cand, np.array([[True, False]]), 1, 1, 0.5)
    assert s.dtype == np.float32
    np.testing.assert_allclose(s[0, 0], 1 - 0.18452, atol=1e-4)
    assert np.isneginf(s[0, 1])
