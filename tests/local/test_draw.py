"""The attention picture: a dot per keypoint in its score's colour, and the scale beneath."""
import numpy as np

from imret.local.draw import colormap, draw_attention
from imret.local.features import LocalFeatures


def test_attention_picture_has_keypoint_dots_and_a_colour_bar():
    img = np.full((100, 100, 3), 128, np.uint8)
    f = LocalFeatures(np.array([[20.0, 30.0], [70.0, 60.0]]), np.ones(2), np.array([1.0, 3.0]),
                      np.eye(2, 4, dtype=np.float32), (100, 100))
    plain = draw_attention(img, f, height=100, keypoints=False)
    dots = np.asarray(draw_attention(img, f, height=100))
    assert dots.shape == np.asarray(plain).shape  # the dots change no size
    lo, hi = colormap(0.15).astype(int), colormap(1.0).astype(int)
    # the colour bar: rows running from the lowest score's colour at the left to the highest's at the right
    bar = [r for r in range(dots.shape[0]) if np.abs(dots[r, 0].astype(int) - lo).max() <= 2
           and np.abs(dots[r, -1].astype(int) - hi).max() <= 2]
    assert bar and bar == list(range(bar[0], bar[-1] + 1)), "no colour bar"
    top = bar[0] - 4 - 100  # the image ends 4 px above the bar
    # a dot at each keypoint in its score's colour: the strongest the top colour, the weakest the bottom one
    assert np.abs(dots[top + 60, 70].astype(int) - hi).max() <= 2
    assert np.abs(dots[top + 30, 20].astype(int) - lo).max() <= 2
    assert np.abs(np.asarray(plain)[top + 30, 20].astype(int) - lo).max() > 2  # not there without dots
