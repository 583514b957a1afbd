"""Matching and RANSAC verification on real photographs and copies of them whose geometry is known."""
import numpy as np
import pytest
from PIL import Image

from imret.local import VerifyConfig, match, verify
from imret.local.features import LocalFeatures


@pytest.fixture(scope="module")
def views(photos, local_extractor, one_thread):
    """Features of an original and of copies made with known geometry."""
    img = photos["astronaut"]  # 512×512
    pil = Image.fromarray(img)
    out = {"original": (img, None)}
    out["crop"] = (img[60:400, 120:480].copy(), np.array([[1, 0, 120], [0, 1, 60]], float))
    out["rescale"] = (np.asarray(pil.resize((256, 256), Image.BILINEAR)), np.array([[2, 0, 0.5], [0, 2, 0.5]], float))
    angle = 20.0
    rot = pil.rotate(angle, resample=Image.BILINEAR, expand=True)
    # PIL rotates counter-clockwise about the centre; the expanded canvas is centred on it
    t = np.deg2rad(angle)
    c = np.array([256 - 0.5, 256 - 0.5])
    c2 = np.array([rot.width / 2 - 0.5, rot.height / 2 - 0.5])
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])  # rotated → original, y down
    out["rotate"] = (np.asarray(rot), np.hstack([r, (c - r @ c2)[:, None]]))
    with one_thread():
        return {k: (local_extractor.extract(im), m) for k, (im, m) in out.items()}


@pytest.mark.parametrize("kind", ["crop", "rescale", "rotate"])
def test_a_copy_verifies_with_many_inliers_and_the_right_geometry(views, kind):
    original, _ = views["original"]
    copy, truth = views[kind]
    v = verify(copy, original)
    # measured (fast config): crop 151, rescale 893 (both images are resized to 384 px), rotate 100 inliers
    assert v.inliers >= 40, v.inliers
    assert v.inliers >= 0.5 * v.tentative
    pts = v.inlier_points
    assert pts.shape == (v.inliers, 4)
    # the model maps the copy's keypoints onto the original's, as the known transform does
    mapped = pts[:, :2] @ v.model[:, :2].T + v.model[:, 2]
    assert np.median(np.linalg.norm(mapped - pts[:, 2:], axis=1)) < 8
    probe = np.array([[50.0, 60.0], [150.0, 120.0], [200.0, 40.0]])
    assert np.abs(probe @ v.model[:, :2].T + v.model[:, 2] - (probe @ truth[:, :2].T + truth[:, 2])).max() < 12
    homography = verify(copy, original, VerifyConfig(model="homography"))
    assert homography.model.shape == (3, 3) and homography.inliers >= 40


@pytest.mark.parametrize("other", ["coffee", "chelsea", "camera", "rocket"])
def test_different_photos_verify_with_few_inliers(views, photos, local_extractor, other, one_thread):
    original, _ = views["original"]
    with one_thread():
        v = verify(local_extractor.extract(photos[other]), original)
    # measured: 3 or 4 inliers; the sv step's default min_inliers is 12
    assert v.inliers < 12, v.inliers


def test_matching_keeps_mutual_nearest_neighbours_that_pass_the_ratio_test(unit_rows):
    d = unit_rows(50, 40, seed=1)
    noisy = d[:20] + 0.05 * unit_rows(20, 40, seed=2)
    q = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    pairs = match(q, d)
    assert sorted(map(tuple, pairs)) == [(i, i) for i in range(20)]
    # an ambiguous query (halfway between two rows) fails the ratio test, passes without it
    amb = (d[30] + d[31])[None] / np.linalg.norm(d[30] + d[31])
    assert len(match(amb, d, ratio=0.9)) == 0
    assert len(match(amb, d, ratio=1.0)) == 1
    assert match(q[:0], d).shape == (0, 2) and match(q, d[:0]).shape == (0, 2)


def test_too_few_matches_are_not_a_model(unit_rows):
    empty = LocalFeatures(np.zeros((2, 2), np.float32), np.ones(2, np.float32), np.ones(2, np.float32),
                          unit_rows(2, 8), (100, 100))
    v = verify(empty, empty)
    assert v.tentative == 2 and v.inliers == 0 and v.model is None
