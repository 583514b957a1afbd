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
