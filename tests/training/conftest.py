import shutil

import pytest
import torch


@pytest.fixture(scope="session")
def few_photos(photoset, tmp_path_factory):
    """A folder of six real photos (no labels): the smallest unsupervised training set."""
    root = tmp_path_factory.mktemp("few-photos")
    for p in [p for p in photoset.db if "distractor" not in p][:6]:
        shutil.copy(p, root)
    return str(root)


@pytest.fixture(scope="module")
def one_thread():
    """Training runs many small operations; on a loaded 2-core machine two threads per
    operation spend most of their time waiting for each other. Results are the same
    run to run for one thread count; another count sums in another order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
