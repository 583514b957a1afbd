import numpy as np
import pytest
from PIL import Image

from imret.errors import DatasetError
from imret.training.augment import _perspective_coefficients, strong_view
from imret.training.data import SOURCES


def _photo(path, value=0):
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def test_unsupervised_gives_every_photo_its_own_label(tmp_path):
    for name in ("a.png", "b.png", "sub/c.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        _photo(tmp_path / name)
    paths, labels = SOURCES.get("unsupervised")(str(tmp_path))
    assert len(paths) == 3 and sorted(labels) == [0, 1, 2]


def test_instance_folders(tmp_path):
    for inst, n in (("bridge", 2), ("tower", 3)):
        (tmp_path / inst).mkdir()
        for i in range(n):
            _photo(tmp_path / inst / f"{i}.png")
    paths, labels = SOURCES.get("instances")(str(tmp_path))
    assert len(paths) == 5
    by_label = {}
    for p, lab in zip(paths, labels):
        by_label.setdefault(lab, set()).add(p.split("/")[-2])
    assert sorted(map(sorted, by_label.values())) == [["bridge"], ["tower"]]


def test_photos_beside_the_instance_folders_are_each_their_own_instance(tmp_path):
    (tmp_path / "tower").mkdir()
    (tmp_path / "empty").mkdir()
    for name in ("tower/0.png", "tower/1.png", "x.png", "y.png"):
        _photo(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a photo")
    paths, labels = SOURCES.get("instances")(str(tmp_path))
    names = [p.split("/")[-1] if "tower" not in p else "tower/" + p.split("/")[-1] for p in paths]
    assert names == ["tower/0.png", "tower/1.png", "x.png", "y.png"]
    assert labels == [0, 0, 1, 2]


def test_pairs_file_links_images_into_instances(tmp_path):
    (tmp_path / "pairs.tsv").write_text(
        "# query<TAB>positives\n"
        "q1.jpg\ta.jpg\tb.jpg\n"
        "\n"
        "c.jpg\tb.jpg\n"       # joins q1's instance through b
        "q2.jpg\td.jpg\n")
    paths, labels = SOURCES.get("pairs")(str(tmp_path / "pairs.tsv"))
    lab = {p.rsplit("/", 1)[1]: k for p, k in zip(paths, labels)}
    assert lab["q1.jpg"] == lab["a.jpg"] == lab["b.jpg"] == lab["c.jpg"]
    assert lab["q2.jpg"] == lab["d.jpg"] != lab["q1.jpg"]
    assert all(p.startswith(str(tmp_path)) for p in paths)
    (tmp_path / "bad.tsv").write_text("lonely.jpg\n")
    with pytest.raises(DatasetError, match="line 1"):
        SOURCES.get("pairs")(str(tmp_path / "bad.tsv"))


def test_strong_views_are_fixed_by_their_seed_and_differ_across_seeds():
    from imret.evaluation.photoset import real_photos

    photos = real_photos()
    img, other = photos["astronaut"], photos["coffee"]
    a = strong_view(img, np.random.default_rng(5), other)
    b = strong_view(img, np.random.default_rng(5), other)
    c = strong_view(img, np.random.default_rng(6), other)
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    assert np.array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)
    # strong: on average far from the photo it came from
    views = [strong_view(img, np.random.default_rng(s), other) for s in range(8)]
    assert len({v.shape for v in views}) > 4


def test_perspective_coefficients_map_the_corners():
    src = np.array([[3, 1], [90, 8], [97, 70], [0, 66]], float)
    dst = np.array([[0, 0], [100, 0], [100, 80], [0, 80]], float)
    a, b, c, d, e, f, g, h = _perspective_coefficients(src, dst)
    for (x, y), (u, v) in zip(dst, src):
        den = g * x + h * y + 1
        assert (a * x + b * y + c) / den == pytest.approx(u) and (d * x + e * y + f) / den == pytest.approx(v)
