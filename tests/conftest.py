import os

import numpy as np
import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def photoset(tmp_path_factory):
    """The Copydays-style set of real photos (see imret.evaluation.photoset), made once."""
    from imret.evaluation.photoset import make_photoset

    return make_photoset(str(tmp_path_factory.mktemp("photoset")), seed=0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _copy_photos(paths, folder):
    import shutil

    os.makedirs(folder, exist_ok=True)
    for p in paths:
        shutil.copy(p, folder)
    return folder


@pytest.fixture(scope="session")
def copy_photos():
    """(paths, folder) → folder, made if missing, holding copies of ``paths``."""
    return _copy_photos
