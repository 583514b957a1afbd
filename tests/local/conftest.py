from contextlib import contextmanager

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def photos():
    """Real photographs by name (scikit-image / scikit-learn)."""
    from imret.evaluation.photoset import real_photos

    return real_photos()


@pytest.fixture(scope="session")
def local_extractor():
    """The light local-feature configuration ('fast': 3 scales at 384 px), untrained attention."""
    from imret.local.config import get_local_config
    from imret.local.extract import LocalExtractor

    return LocalExtractor(get_local_config("fast"), device="cpu")


def _unit_rows(n, d, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def unit_rows():
    """(n, d, seed) → n×d random float32 rows of unit norm."""
    return _unit_rows


@contextmanager
def _one_thread():
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="session")
def one_thread():
    """A context manager that runs torch, BLAS and OpenMP (faiss) on one thread. On shared,
    busy cores two spinning threads per library cost several times the work of one; the
    heavy extraction fixtures run inside it. Results do not depend on it."""
    return _one_thread
