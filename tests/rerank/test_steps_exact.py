"""Each re-ranking step is exact on small hand-made descriptor sets: closed forms worked
out by hand, and literal loop-by-loop versions of the published procedures."""
import numpy as np
import pytest

from imret.descriptor.whitening import l2_normalize
from imret.rerank import DBA, AlphaQE, AugmentedRows, AverageQE, GlobalFeatureRerank, KReciprocal, Pipeline, Shortlist


def unit(*rows):
    return l2_normalize(np.array(rows, np.float32))


def shortlist_for(q, rows, k=None):
    sims = q @ rows.T
    ranks = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return Shortlist(q, ranks, np.take_along_axis(sims, ranks, 1).astype(np.float32))


def random_rows(rng, n, d=16):
    return l2_normalize(rng.normal(size=(n, d)).astype(np.float32))


# -- query expansion ---------------------------------------------------------------------------------

def test_alpha_qe_matches_the_formula_worked_by_hand():
    q = unit([1, 0])
    rows = unit([0.6, 0.8], [0, 1], [-1, 0])
    # neighbours by similarity: (0.6,0.8) s=0.6, (0,1) s=0; (−1,0) s=−1 comes last
    out = AlphaQE(n=2, alpha=1.0)(shortlist_for(q, rows), rows)
    expected = unit([1 + 0.6 * 0.6, 0.6 * 0.8])  # q + 0.6·d₁ + 0·d₂
    np.testing.assert_allclose(out.queries, expected, atol=1e-6)
    np.testing.assert_array_equal(out.ranks, [[0, 1, 2]])
    np.testing.assert_allclose(out.scores, expected @ rows.T, atol=1e-6)


def test_alpha_qe_with_alpha_zero_is_average_qe(rng):
    rows = random_rows(rng, 200)
    q = l2_normalize(rows[:7] + 0.3 * rng.normal(size=(7, 16)).astype(np.float32))
    sl = shortlist_for(q, rows, 50)
    for n in (1, 3, 10):
        a = AlphaQE(n=n, alpha=0.0)(sl, rows)
        b = AverageQE(n=n)(sl, rows)
        np.testing.assert_allclose(a.queries, b.queries, atol=1e-6)
        np.testing.assert_array_equal(a.ranks, b.ranks)
        # and average QE is the normalised mean of the query and its top n, written out
        mean = l2_normalize(np.stack([(q[i] + rows[sl.ranks[i, :n]].sum(0)) / (n + 1) for i in range(7)]))
        np.testing.assert_allclose(b.queries, mean, atol=1e-6)


def test_alpha_qe_gives_no_weight_to_negative_similarities():
    q = unit([1, 0])
    rows = unit([0.8, 0.6], [-0.6, 0.8])
    out = AlphaQE(n=2, alpha=3.0)(shortlist_for(q, rows), rows)
    np.testing.assert_allclose(out.queries, unit([1 + 0.8 ** 4, 0.8 ** 3 * 0.6]), atol=1e-6)


def test_expansion_uses_only_verified_results_once_verification_ran():
    q = unit([1, 0, 0])
    rows = unit([0.9, 0.1, 0], [0.8, 0, 0.2], [0.5, 0.5, 0])
    sl = shortlist_for(q, rows)
    verified = np.array([[False, True, True]])
    out = AverageQE(n=1)(sl.replace(verified=verified), rows)
    np.testing.assert_allclose(out.queries, unit(q[0] + rows[1]), atol=1e-6)  # the first verified, not the first
    # the mask travels with its rows when the shortlist is re-sorted
    assert dict(zip(out.ranks[0], out.verified[0])) == {0: False, 1: True, 2: True}


def test_shortlist_scoped_steps_leave_entries_past_their_shortlist_alone(rng):
    rows = random_rows(rng, 60)
    sl = shortlist_for(l2_normalize(rows[:3] + 0.5), rows)
    for step in (AlphaQE(shortlist=10, scope="shortlist"), GlobalFeatureRerank(shortlist=10, scope="shortlist"),
                 KReciprocal(shortlist=10)):
        out = step(sl, rows)
        np.testing.assert_array_equal(out.ranks[:, 10:], sl.ranks[:, 10:])
        assert all(set(a) == set(b) for a, b in zip(out.ranks[:, :10], sl.ranks[:, :10]))


def test_padded_results_stay_padded_and_last(rng):
    rows = random_rows(rng, 5)
    sl = shortlist_for(rows[:2], rows)
    ranks = np.concatenate([sl.ranks, -np.ones((2, 3), np.int64)], 1)
    scores = np.concatenate([sl.scores, np.full((2, 3), -np.inf, np.float32)], 1)
    padded = Shortlist(sl.queries, ranks, scores)
    for step in (AlphaQE(), AverageQE(n=8), GlobalFeatureRerank(k=6), KReciprocal(k1=10)):
        out = step(padded, rows)
        assert (out.ranks[:, 5:] == -1).all() and np.isneginf(out.scores[:, 5:]).all(), step
        assert np.isfinite(out.scores[:, :5]).all(), step


# -- database-side augmentation -----------------------------------------------------------------------

def test_dba_matches_the_formula_worked_by_hand():
    rows = unit([1, 0], [0.8, 0.6], [0, 1])
    out = DBA(k=1, alpha=1.0).augment(rows)
    # nearest other row: 0↔1 (s=0.8), 2→1 (s=0.6)
    expected = unit([1 + 0.8 * 0.8, 0.8 * 0.6], [0.8 + 0.8, 0.6], [0.6 * 0.8, 1 + 0.6 * 0.6])
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_dba_keeps_unit_norm_and_float32(rng):
    rows = random_rows(rng, 300, 32)
    rows[7] = rows[3]  # exact duplicates must not break the self-exclusion
    for step in (DBA(), DBA(k=10, alpha=0.0), DBA(k=400)):
        out = step.augment(rows)
        assert out.dtype == np.float32 and out.shape == rows.shape
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_dba_incremental_add_equals_recomputation_from_scratch(rng, k):
    rows = random_rows(rng, 400)
    step = DBA(k=k, alpha=3.0)
    grown = AugmentedRows.build(step, rows[:3])
    for end in (40, 41, 250, 400):  # a few rows at a time, one row, many rows
        before = grown
        grown, changed = grown.with_added(rows[:end])
        scratch = AugmentedRows.build(step, rows[:end])
        np.testing.assert_array_equal(grown.neighbours, scratch.neighbours)
        np.testing.assert_allclose(grown.rows, scratch.rows, atol=1e-6)
        # exactly the rows whose neighbour list changed were augmented again; the rest kept their bits
        n_old = len(before.rows)
        moved = np.flatnonzero((scratch.neighbours[:n_old] != before.neighbours).any(1))
        np.testing.assert_array_equal(changed, np.concatenate([moved, np.arange(n_old, end)]))
        still = np.setdiff1d(np.arange(n_old), moved)
        np.testing.assert_array_equal(grown.rows[still], before.rows[still])


def test_dba_removal_equals_recomputation_from_scratch(rng):
    rows = random_rows(rng, 300)
    state = AugmentedRows.build(DBA(k=4), rows)
    keep = np.ones(300, bool)
    keep[rng.choice(300, 60, replace=False)] = False
    after, changed = state.with_removed(keep, rows[keep])
    scratch = AugmentedRows.build(DBA(k=4), rows[keep])
    np.testing.assert_array_equal(after.neighbours, scratch.neighbours)
    np.testing.assert_allclose(after.rows, scratch.rows, atol=1e-6)
    lost = np.isin(state.neighbours[keep], np.flatnonzero(~keep)).any(1)
    np.testing.assert_array_equal(changed, np.flatnonzero(lost))
    assert not np.shares_memory(after.rows, state.rows)  # the old state is left as it was


def test_dba_on_fewer_rows_than_k_pads_the_neighbour_lists():
    rows = unit([1, 0], [0, 1])
    state = AugmentedRows.build(DBA(k=3, alpha=0.0), rows)
    np.testing.assert_array_equal(state.neighbours, [[1, -1, -1], [0, -1, -1]])
    np.testing.assert_allclose(state.rows, unit([1, 1], [1, 1]), atol=1e-6)


# -- global-feature re-ranking ----------------------------------------------------------------------

def test_shortlist_gfr_by_hand():
    # c0 = (1, 0), c1 = (0.6, 0.8), c2 = (0, 1); q = (0.8, 0.6): q·c1 = 0.96, q·c0 = 0.8, q·c2 = 0.6,
    # so the shortlist is c1, c0, c2. k = 1, α = 2, w₀ = 0.5. Within the shortlist the nearest
    # other of c0 is c1 (0.6), of c1 c2 (0.8), of c2 c1 (0.8): c0' = 0.5·c0 + 0.36·c1 = (0.716, 0.288),
    # c1' = 0.5·c1 + 0.64·c2 = (0.3, 1.04), c2' = 0.5·c2 + 0.64·c1 = (0.384, 1.012). The query's
    # neighbour is its first result, c1: q' = 0.5·q + 0.9216·c1 = (0.95296, 1.03728).
    # Cosines with q': c0' 0.90248, c1' 0.89507, c2' 0.92852 → c2, c0, c1
    q = unit([0.8, 0.6])
    rows = unit([1, 0], [0.6, 0.8], [0, 1])
    sl = shortlist_for(q, rows)
    np.testing.assert_array_equal(sl.ranks, [[1, 0, 2]])
    out = GlobalFeatureRerank(k=1, alpha=2.0, self_weight=0.5, shortlist=3, scope="shortlist")(sl, rows)
    np.testing.assert_allclose(out.queries, unit([0.95296, 1.03728]), atol=1e-6)
    np.testing.assert_array_equal(out.ranks, [[2, 0, 1]])
    np.testing.assert_allclose(out.scores, [[0.92852, 0.90248, 0.89507]], atol=1e-5)


def test_gfr_rank_weights_replace_similarity_weights():
    q = unit([1, 0, 0])
    rows = unit([0.9, 0.3, 0], [0.7, 0, 0.7], [0, 1, 0])
    sl = shortlist_for(q, rows)
    out = GlobalFeatureRerank(k=1, weights=(0.5,), self_weight=1.0)(sl, rows)
    np.testing.assert_allclose(out.queries[0], unit(q[0] + 0.5 * rows[0])[0], atol=1e-6)
    identity = GlobalFeatureRerank(k=2, weights=(0, 0))(sl, rows)
    np.testing.assert_allclose(identity.scores, sl.scores, atol=1e-6)


@pytest.mark.parametrize("step", [GlobalFeatureRerank(k=1, alpha=3.0), AlphaQE(n=1), AverageQE(n=1)])
def test_expansion_lifts_a_positive_that_the_top_result_vouches_for(step):
    # row 0: a view of the query's object; row 2: another view, very like row 0 (s=0.95)
    # but less like the query than the distractor, row 1, is
    q = unit([1, 0.5, 0.3, 0])
    rows = unit([1, 0.6, 0, 0], [1, 0, 0.6, 0], [1, 0.7, -0.3, 0.3])
    sl = shortlist_for(q, rows)
    np.testing.assert_array_equal(sl.ranks, [[0, 1, 2]])
    out = step(sl, rows)
    np.testing.assert_array_equal(out.ranks, [[0, 2, 1]])


# -- k-reciprocal re-ranking ------------------------------------------------------------------------

def k_reciprocal_reference(q, cand, k1, k2, lam):
    """Zhong et al.'s re-ranking (their published code's steps) on {query} ∪ shortlist, with loops."""
    x = np.vstack([q, cand]).astype(np.float64)
    m = len(x)
    sims = x @ x.T
    dist = 2 - 2 * sims
    initial = np.argsort(-sims, axis=1, kind="stable")

    def recip(i, k):
        fwd = initial[i, :k + 1]
        return np.array([j for j in fwd if i in initial[j, :k + 1]])

    v = np.zeros((m, m))
    for i in range(m):
        r = recip(i, k1)
        expansion = r
        for c in r:
            cr = recip(c, int(np.around(k1 / 2)))
            if len(np.intersect1d(cr, r)) > 2 / 3 * len(cr):
                expansion = np.append(expansion, cr)
        expansion = np.unique(expansion)
        w = np.exp(-dist[i, expansion])
        v[i, expansion] = w / w.sum()
    v = np.stack([v[initial[i, :k2]].mean(0) for i in range(m)])
    scores = []
    for g in range(1, m):
        shared = np.minimum(v[0], v[g]).sum()
        jaccard = 1 - shared / (2 - shared)
        scores.append(1 - ((1 - lam) * jaccard + lam * (1 - sims[0, g])))
    return np.array(scores)


@pytest.mark.parametrize("k1,k2", [(3, 1), (4, 2), (6, 3)])
def test_k_reciprocal_matches_a_literal_reading_of_the_method(rng, k1, k2):
    centres = rng.normal(size=(3, 8))
    rows = l2_normalize((np.repeat(centres, 5, 0) + 0.8 * rng.normal(size=(15, 8))).astype(np.float32))
    q = l2_normalize((centres + 0.8 * rng.normal(size=(3, 8))).astype(np.float32))
    sl = shortlist_for(q, rows)
    out = KReciprocal(k1=k1, k2=k2, lam=0.3)(sl, rows)
    for i in range(3):
        ref = k_reciprocal_reference(q[i], rows[sl.ranks[i]], k1, k2, 0.3)
        order = np.argsort(-ref, kind="stable")
        np.testing.assert_allclose(out.scores[i], ref[order], atol=1e-5)
        np.testing.assert_array_equal(out.ranks[i], sl.ranks[i][order])


def test_k_reciprocal_with_lambda_one_keeps_the_cosine_ranking(rng):
    rows = random_rows(rng, 50)
    sl = shortlist_for(l2_normalize(rows[:4] + 0.3), rows, 30)
    out = KReciprocal(lam=1.0, shortlist=30)(sl, rows)
    np.testing.assert_array_equal(out.ranks, sl.ranks)
    np.testing.assert_allclose(out.scores, sl.scores, atol=1e-6)


# -- composition ------------------------------------------------------------------------------------

def test_pipeline_applies_steps_in_order_over_augmented_rows(rng):
    rows = random_rows(rng, 80)
    q = l2_normalize(rows[:5] + 0.4 * rng.normal(size=(5, 16)).astype(np.float32))
    p = Pipeline.parse("dba:k=3,aqe:n=2,gfr:k=2,shortlist=20")
    ranks = p(q, rows)
    aug = DBA(k=3).augment(rows)
    sl = shortlist_for(q, aug)
    by_hand = GlobalFeatureRerank(k=2, shortlist=20)(AlphaQE(n=2)(sl, aug), aug)
    np.testing.assert_array_equal(ranks, by_hand.ranks)
    assert ranks.shape == (5, 80) and all(sorted(r) == list(range(80)) for r in ranks)
