"""``sv:widen=N``: images the local descriptors vote for join the verified head."""
import numpy as np
import pytest

from imret.config import ConfigError
from imret.local.features import LocalFeatures
from imret.local.steps import SpatialVerification, widen_head
from imret.rerank import Pipeline, Shortlist


def test_widen_head_moves_voted_images_after_the_head_with_their_global_scores():
    rows = np.array([[1, 0], [0, 1], [0.6, 0.8], [0.8, 0.6], [-1, 0]], np.float32)
    queries = np.array([[1, 0], [0, 1]], np.float32)
    ranks = np.array([[0, 3, 2, 1, 4], [1, 2, 3, 0, 4]])
    scores = np.array([[1, .8, .6, 0, -1], [1, .8, .6, 0, 0]], np.float32)
    sl = Shortlist(queries, ranks, scores)
    # query 0: votes for 3 (already in its head of 2), 4, 1; query 1: votes only for its head
    out = widen_head(sl, rows, 2, [np.array([3, 4, 1]), np.array([2])], 2)
    assert out.ranks.tolist() == [[0, 3, 4, 1, 2, -1, -1], [1, 2, 3, 0, 4, -1, -1]]
    np.testing.assert_allclose(out.scores[0, :5], [1, .8, -1, 0, .6])
    np.testing.assert_allclose(out.scores[1, :5], [1, .8, .6, 0, 0])
    assert np.isneginf(out.scores[:, 5:]).all()


def _feats(rng, n=60, size=(400, 400)):
    x = rng.normal(size=(n, 8)).astype(np.float32)
    return LocalFeatures(rng.uniform(20, 380, (n, 2)).astype(np.float32), np.ones(n, np.float32),
                         np.ones(n, np.float32), x / np.linalg.norm(x, axis=1, keepdims=True), size)


def test_a_voted_image_outside_the_shortlist_is_verified_and_ranked_first():
    rng = np.random.default_rng(0)
    db = [_feats(rng) for _ in range(4)]
    same = db[3]  # the query shows what image 3 shows: every feature matches
    rows = np.eye(4, dtype=np.float32)
    sl = Shortlist(np.array([[1, 0, 0, 0]], np.float32), np.array([[0, 1, 2, 3]]),
                   np.array([[1, 0, 0, 0]], np.float32))

    def lookup(positions):
        return {int(p): db[int(p)] for p in positions}

    def voter(query, n):
        return np.array([3, 0, 1, 2])[:n]

    step = SpatialVerification(shortlist=1, widen=1, verify="delf", min_inliers=12)
    bound = Pipeline((step.bind([same], lookup, "delf", voter),))
    assert bound.rerank(sl, rows).ranks[0, :2].tolist() == [3, 0]
    plain = Pipeline((SpatialVerification(shortlist=1, verify="delf").bind([same], lookup, "delf", voter),))
    assert plain.rerank(sl, rows).ranks[0].tolist()[3] == 3  # without widening it stays last


def test_widen_needs_votes_and_round_trips():
    step = SpatialVerification(widen=50)
    assert Pipeline.parse(step.spec()).steps[0] == step
    with pytest.raises(ConfigError, match="widen"):
        step.bind([None], lambda p: {}, "delf")
    with pytest.raises(ConfigError, match="widen"):
        SpatialVerification(widen=-1)
