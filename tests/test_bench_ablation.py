"""The ablation's leave-one-landmark-out folds never read the labels of the landmark scored."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from ablation import lolo_labels, lolo_landmarks  # noqa: E402

LABELS = ["paris:louvre", "paris:eiffel", None, "paris:louvre", "ukbench:0", "paris:eiffel", "ukbench:0"]


def test_a_lolo_fold_drops_the_left_out_landmark_and_the_unlabelled_photos():
    keep, per_image = lolo_labels(LABELS, "louvre", "labels")
    assert keep == [1, 4, 5, 6]
    # instances numbered by sorted name: paris:eiffel 0, ukbench:0 1
    assert per_image == [-1, 0, -1, -1, 1, 0, 1]


def test_lolo_with_unlabelled_photos_keeps_them_each_its_own_instance():
    keep, per_image = lolo_labels(LABELS, "louvre", "labels+unlabelled")
    assert keep == list(range(7))
    # sorted names: own:0, own:2, own:3, paris:eiffel, ukbench:0
    assert per_image == [0, 3, 1, 2, 4, 3, 4]
    # the two louvre photos, labelled alike in the data, are different instances here
    assert per_image[0] != per_image[3]


def test_an_unseen_fold_trains_the_lolo_photos_without_their_labels():
    keep, per_image = lolo_labels(LABELS, "louvre", "unseen")
    assert keep == [1, 4, 5, 6]
    # sorted names own:1, own:4, own:5, own:6: the two eiffel photos are not one instance
    assert per_image == [-1, 0, -1, -1, 1, 2, 3]


def test_other_labels_read_no_paris_label_and_are_the_same_fold_for_every_landmark():
    keep, per_image = lolo_labels(LABELS, "louvre", "other-labels+unlabelled")
    assert keep == list(range(7))
    # sorted names: own:0, own:1, own:2, own:3, own:5, ukbench:0
    assert per_image == [0, 1, 2, 3, 5, 4, 5]
    assert lolo_labels(LABELS, "eiffel", "other-labels+unlabelled") == (keep, per_image)


def test_an_unknown_lolo_mode_is_refused_by_name():
    with pytest.raises(ValueError, match="'labelled'"):
        lolo_labels(LABELS, "louvre", "labelled")


def test_the_folds_are_the_landmarks_with_photos_of_their_own():
    queries = ["louvre", "-", "eiffel", "arc_triomphe", "none", "louvre"]
    assert lolo_landmarks(queries) == ["eiffel", "louvre"]  # sorted, once each; the one-photo arc has no fold
