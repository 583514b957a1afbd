"""Exact cases for verification: the model comes back in original pixels, and the RANSAC
threshold is in pixels of the frame (longest side ``frame``; ``upscale`` off keeps
smaller images' own pixels)."""
import numpy as np

from imret.local.features import LocalFeatures
from imret.local.verify import VerifyConfig, fit_model, verify


def _features(xy, size, desc):
    n = len(xy)
    return LocalFeatures(np.asarray(xy, np.float32), np.ones(n, np.float32), np.ones(n, np.float32),
                         np.asarray(desc, np.float32), size)


def _grid_pair(shift_last: float):
    """20 query points on a grid and their images under x' = 0.5·x + 100, y' = 0.5·y + 40, the
    last one moved ``shift_last`` px further in x; each pair shares a one-hot descriptor."""
    g = np.array([(x, y) for x in range(100, 1100, 200) for y in range(100, 900, 200)], np.float32)
    dst = g * 0.5 + np.array([100, 40], np.float32)
    dst[-1, 0] += shift_last
    desc = np.eye(len(g), dtype=np.float32)
    return _features(g, (1000, 2000), desc), _features(dst, (500, 1000), desc)


def test_the_model_maps_original_pixels_whatever_the_frame():
    q, r = _grid_pair(0.0)
    for cfg in (VerifyConfig(), VerifyConfig(matcher="distance", method="ransac", frame=1024, upscale=False)):
        v = verify(q, r, cfg)
        assert v.inliers == 20
        np.testing.assert_allclose(v.model, [[0.5, 0, 100], [0, 0.5, 40]], atol=1e-3)


def test_the_threshold_is_in_frame_pixels():
    # the result is 1000 px wide: in a 512 px frame (×0.512) a 20 px error is 10.2 px, under
    # 12; with frame 1024 and upscale off it keeps its own pixels: 20 px, over 12
    q, r = _grid_pair(20.0)
    assert verify(q, r, VerifyConfig(threshold=12)).inliers == 20
    assert verify(q, r, VerifyConfig(threshold=12, frame=1024, upscale=False)).inliers == 19
    assert verify(q, r, VerifyConfig(threshold=12, frame=2048, upscale=True)).inliers == 19


def test_fit_model_needs_three_points_for_an_affine_map_and_four_for_a_homography():
    src = np.array([[0, 0], [10, 0], [0, 10]], np.float32)
    model, mask = fit_model(src, src + 5, VerifyConfig(method="ransac"))
    np.testing.assert_allclose(model, [[1, 0, 5], [0, 1, 5]], atol=1e-6)
    assert mask.tolist() == [True, True, True]
    model, mask = fit_model(src, src + 5, VerifyConfig(model="homography"))
    assert model is None and mask.tolist() == [False, False, False]


def test_matcher_defaults_and_output_types():
    from imret.local.verify import match, match_distance

    d = np.eye(3, 4, dtype=np.float32)
    r = np.deg2rad
    # 50° from d1: 0.845 apart (fails the default 0.8), 40° from d0: 0.684 (passes)
    q = np.array([[0, np.cos(r(50)), 0, np.sin(r(50))], [np.cos(r(40)), 0, 0, np.sin(r(40))]], np.float32)
    assert match_distance(q, d).tolist() == [[1, 0]]
    for out in (match_distance(q, d), match_distance(q[:0], d), match(q, d), match(q[:0], d), match(q, d[:0])):
        assert out.dtype == np.int64 and out.shape[1] == 2
    # match's defaults: ratio 0.9 and the mutual check. Both queries are nearest to d0 and pass
    # the ratio test; d0's nearest query is the second: only it is mutual
    q2 = np.array([[0.9, 0.3, 0.3, 0], [0.99, 0.1, 0.1, 0]], np.float32)
    q2 /= np.linalg.norm(q2, axis=1, keepdims=True)
    assert match(q2, d).tolist() == [[1, 0]]
    assert match(q2, d, mutual=False).tolist() == [[0, 0], [1, 0]]
    # an ambiguous query (nearly equidistant to d0 and d1) fails the ratio test even where mutual
    amb = np.array([[1, 1, 0.05, 0]], np.float32) / np.linalg.norm([1, 1, 0.05])
    assert match(np.vstack([q2[1:], amb]), d, ratio=0.9).tolist() == [[0, 0]]
    # alone, it is its nearest row's nearest query (mutual) and still fails the ratio test
    assert match(amb, d).tolist() == [] and match(amb, d, ratio=1.0).tolist() == [[0, 0]]


def test_the_default_config_is_the_ratio_recipe_field_by_field():
    cfg = VerifyConfig()
    assert (cfg.matcher, cfg.distance, cfg.ratio, cfg.mutual, cfg.model, cfg.method) == \
        ("ratio", 0.8, 0.9, True, "affine", "magsac")
    assert (cfg.threshold, cfg.frame, cfg.upscale, cfg.max_iters, cfg.confidence, cfg.min_inliers, cfg.score) == \
        (12.0, 512, True, 2000, 0.999, 8, "global")


def test_config_bounds_are_inclusive_where_documented():
    import pytest

    from imret.config import ConfigError

    for ok in (dict(ratio=1.0), dict(ratio=0.01), dict(distance=2.0), dict(distance=0.01), dict(max_iters=1),
               dict(threshold=0.5, frame=1), dict(model="homography"), dict(method="ransac"), dict(score="inliers"),
               dict(matcher="distance")):
        VerifyConfig(**ok)
    for bad in (dict(ratio=0), dict(ratio=1.01), dict(distance=2.01), dict(distance=-0.5), dict(threshold=0),
                dict(frame=0), dict(threshold=-1.0), dict(max_iters=1.5), dict(max_iters=-3), dict(model="similarity")):
        with pytest.raises(ConfigError):
            VerifyConfig(**bad)
    assert VerifyConfig().replace(threshold=3.0) == VerifyConfig(threshold=3.0)


def test_get_verify_config():
    import pytest

    from imret.config import ConfigError
    from imret.local.verify import VERIFY_CONFIGS, get_verify_config

    assert get_verify_config("delf") is VERIFY_CONFIGS["delf"] and get_verify_config("ratio") == VerifyConfig()
    with pytest.raises(ConfigError, match="unknown verification"):
        get_verify_config("sift")


def test_verification_properties():
    from imret.local.verify import Verification

    points = np.array([[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]], np.float32)
    v = Verification(np.array([[0, 1], [1, 0], [2, 2]]), points, np.array([True, False, True]), None)
    assert v.inliers == 2 and isinstance(v.inliers, int) and v.tentative == 3
    assert v.inlier_points.tolist() == [[0, 0, 1, 1], [4, 4, 5, 5]]
    assert v.outlier_points.tolist() == [[2, 2, 3, 3]]


def test_matchers_use_the_similarities_they_are_given():
    from imret.local.verify import match, match_distance

    d = np.eye(2, dtype=np.float32)
    q = np.eye(2, dtype=np.float32)
    swapped = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)  # as if q0 were d1 and q1 were d0
    assert match_distance(q, d, 0.8, sims=swapped.copy()).tolist() == [[0, 1], [1, 0]]
    assert match(q, d, sims=swapped.copy()).tolist() == [[0, 1], [1, 0]]
    assert match(q, d).tolist() == [[0, 0], [1, 1]]


def test_a_single_result_feature_passes_the_ratio_test():
    from imret.local.verify import match

    # one database row: no second neighbour to compare with, so the ratio test keeps the match
    q = np.array([[0.6, 0.8]], np.float32)
    assert match(q, np.array([[1.0, 0.0]], np.float32), ratio=0.5).tolist() == [[0, 0]]


def test_the_homography_comes_back_in_original_pixels():
    q, r = _grid_pair(0.0)
    v = verify(q, r, VerifyConfig(model="homography", method="ransac"))
    assert v.inliers == 20
    np.testing.assert_allclose(v.model, [[0.5, 0, 100], [0, 0.5, 40], [0, 0, 1]], atol=1e-3)


def test_too_few_matches_give_no_model():
    q, r = _grid_pair(0.0)
    r2 = _features(r.xy[:2], r.size, r.descriptors[:2])
    v = verify(q, r2, VerifyConfig())
    assert v.model is None and v.tentative == 2 and v.inliers == 0 and v.inlier_mask.tolist() == [False, False]
    assert v.points.tolist() == [[100, 100, 150, 90], [100, 300, 150, 190]]


def test_verify_many_equals_verify_one_by_one_across_chunks():
    from imret.local.verify import verify_many

    q, r = _grid_pair(0.0)
    empty = _features(np.zeros((0, 2)), r.size, np.zeros((0, 20)))
    five = _features(r.xy[:5], r.size, r.descriptors[:5])  # query rows 0–4 match it exactly
    results = [r, empty, r, five]
    for chunk in (1, 20, 25, 45, 4096):
        out = verify_many(q, results, VerifyConfig(), chunk=chunk)
        assert [v.tentative for v in out] == [20, 0, 20, 5]
        assert [v.inliers for v in out] == [20, 0, 20, 5]
        assert out[0].pairs.tolist() == [[i, i] for i in range(20)] == out[2].pairs.tolist()
        assert out[3].pairs.tolist() == [[i, i] for i in range(5)]
    assert verify_many(q, []) == []
    only_empty = verify_many(q, [empty, empty])
    assert [v.tentative for v in only_empty] == [0, 0]


def test_config_and_recipe_errors_name_the_choices():
    import pytest

    from imret.config import ConfigError
    from imret.local.verify import get_verify_config

    cases = [(dict(matcher="knn"), "matcher must be one of distance, ratio, got 'knn'"),
             (dict(model="similarity"), "model must be one of affine, homography, got 'similarity'"),
             (dict(method="lmeds"), "method must be one of ransac, magsac, got 'lmeds'"),
             (dict(score="sum"), "score must be one of global, inliers, verified, got 'sum'"),
             (dict(ratio=1.5), r"ratio must be in \(0, 1\], got 1.5"),
             (dict(distance=3.0), r"distance must be in \(0, 2\] \(unit descriptors\), got 3.0"),
             (dict(frame=0), "threshold and frame must be positive, got 12.0, 0"),
             (dict(max_iters=0), r"max_iters \(RANSAC trials\) must be a positive integer, got 0")]
    for bad, message in cases:
        with pytest.raises(ConfigError, match=f"^{message}$"):
            VerifyConfig(**bad)
    with pytest.raises(ConfigError, match="^unknown verification 'sift'; known: delf, ratio$"):
        get_verify_config("sift")


def test_a_single_query_row_is_matched():
    from imret.local.verify import match, match_distance

    d = np.eye(2, dtype=np.float32)
    q = np.array([[0.96, 0.28]], np.float32)  # 0.283 from d0
    assert match_distance(q, d).tolist() == [[0, 0]] and match(q, d).tolist() == [[0, 0]]


def test_the_ratio_test_compares_each_query_with_its_own_second_neighbour():
    from imret.local.verify import match

    # given similarities: q0's best 0.9 (distance 0.447), its second 0.1 (1.342): passes 0.9;
    # q1's best 0.99 (0.141), second 0.95 (0.316): passes. q1's 0.95 is no concern of q0's
    sims = np.array([[0.9, 0.1, 0.0], [0.0, 0.95, 0.99]])
    q, d = np.zeros((2, 3), np.float32), np.zeros((3, 3), np.float32)
    assert match(q, d, ratio=0.9, sims=sims).tolist() == [[0, 0], [1, 2]]


def test_similarities_rounded_above_one_count_as_distance_zero():
    from imret.local.verify import match

    # float rounding can put a unit pair's dot product just above 1: the distance is 0, not NaN
    q, d = np.zeros((1, 2), np.float32), np.zeros((2, 2), np.float32)
    assert match(q, d, ratio=0.9, sims=np.array([[1 + 2e-6, 0.5]])).tolist() == [[0, 0]]
    assert match(q, d, ratio=0.9, sims=np.array([[1 + 2e-6, 1 + 1e-6]])).tolist() == [[0, 0]]


def test_a_homography_from_four_points_and_masks_are_bool():
    src = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], np.float32)
    model, mask = fit_model(src, src * 2 + 3, VerifyConfig(model="homography", method="ransac"))
    np.testing.assert_allclose(model, [[2, 0, 3], [0, 2, 3], [0, 0, 1]], atol=1e-6)
    assert mask.dtype == bool and mask.tolist() == [True] * 4
    model, mask = fit_model(src[:3], src[:3] + 5, VerifyConfig())
    assert mask.dtype == bool and model.dtype == np.float64
    model, mask = fit_model(src[:3], src[:3], VerifyConfig(model="homography"))
    assert model is None and mask.dtype == bool and mask.tolist() == [False] * 3


def test_three_collinear_points_give_no_model():
    # plain RANSAC in OpenCV returns a NaN map with 3 inliers here; MAGSAC++ returns none
    src = np.array([[0, 0], [10, 5], [20, 10]], np.float32)
    for method in ("ransac", "magsac"):
        model, mask = fit_model(src, src * 0.5 + 7, VerifyConfig(method=method))
        assert model is None and mask.tolist() == [False, False, False]


def test_the_homography_threshold_and_an_outlier():
    # result 1000 px wide in a 1024 frame without upscale: its own pixels; the last match is 20 px off
    q, r = _grid_pair(20.0)
    cfg = VerifyConfig(model="homography", method="ransac", frame=1024, upscale=False)
    v = verify(q, r, cfg.replace(threshold=12.0))
    assert v.inliers == 19 and not v.inlier_mask[-1]
    np.testing.assert_allclose(v.model, [[0.5, 0, 100], [0, 0.5, 40], [0, 0, 1]], atol=1e-3)
    assert verify(q, r, cfg.replace(threshold=25.0)).inliers == 20


def test_the_result_frame_follows_upscale():
    # the result (1000 px wide) in a 2048 frame: upscaled ×2.048, the 20 px error is 41 px (over
    # 30); kept at its own pixels it is 20 px (under 30)
    q, r = _grid_pair(20.0)
    assert verify(q, r, VerifyConfig(threshold=30, frame=2048, upscale=True)).inliers == 19
    assert verify(q, r, VerifyConfig(threshold=30, frame=2048, upscale=False)).inliers == 20


def test_points_pair_query_and_result_rows_and_are_float32():
    # the result's features in reverse order: query row i matches result row 19 − i
    q, r = _grid_pair(0.0)
    rev = LocalFeatures(r.xy[::-1].astype(np.float64), r.scales, r.scores, r.descriptors[::-1].copy(), r.size)
    v = verify(q, rev, VerifyConfig())
    assert v.pairs.tolist() == [[i, 19 - i] for i in range(20)]
    assert v.points.dtype == np.float32 and v.inlier_mask.dtype == bool
    np.testing.assert_allclose(v.points[:, :2], q.xy)
    np.testing.assert_allclose(v.points[:, 2:], q.xy * 0.5 + [100, 40])
    assert v.inliers == 20 and v.outlier_points.shape == (0, 4)
