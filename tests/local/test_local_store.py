"""Reduction, product quantisation and the per-image HDF5 store."""
import numpy as np
import pytest
import torch

from imret.errors import IndexFileError
from imret.local.config import LocalConfig
from imret.local.features import LocalFeatures
from imret.local.store import LocalCodec, LocalStore


def _features(rng, n, dim=112, size=(300, 400)):
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[:, :8] += 3 * rng.normal(size=(1, 8))  # some shared structure for the PCA to find
    return LocalFeatures(rng.uniform(0, 300, (n, 2)).astype(np.float32),
                         rng.choice(LocalConfig().scales, n).astype(np.float32),
                         np.sort(rng.uniform(1, 50, n))[::-1].astype(np.float32),
                         x / np.linalg.norm(x, axis=1, keepdims=True), size)


def test_pq_round_trip_keeps_descriptors_close_in_20_bytes(one_thread):
    rng = np.random.default_rng(0)
    train = np.concatenate([_features(rng, 500).descriptors for _ in range(8)])
    with one_thread():
        codec = LocalCodec.fit(train, LocalConfig())
    assert codec.kind == "pq" and codec.dim == 40 and codec.code_shape == (20,)
    x = codec.reduce(_features(rng, 300).descriptors)
    assert x.shape == (300, 40) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    codes = codec.encode(x)
    assert codes.dtype == np.uint8 and codes.shape == (300, 20)
    back = codec.decode(codes)
    cos = np.sum(back * x, axis=1)
    assert cos.mean() > 0.9 and cos.min() > 0.6
    # decoding is exact: the same codes give the same vectors, also from a codec rebuilt from its arrays
    again = LocalCodec.from_arrays("pq", codec.arrays())
    assert np.array_equal(again.decode(codes), back)
    # nearest neighbours survive quantisation: each decoded row is closest to its own original
    assert np.mean(np.argmax(back @ x.T, axis=1) == np.arange(300)) > 0.9


def test_too_few_descriptors_for_pq_are_stored_as_float16(unit_rows):
    codec = LocalCodec.fit(unit_rows(100, 112), LocalConfig())
    assert codec.kind == "float16"
    assert LocalCodec.fit(unit_rows(100, 112), LocalConfig(storage="float32")).kind == "float32"


@pytest.fixture
def make_store(one_thread):
    def make(rng, n_images=6):
        from imret.local.attention import Attention

        store = LocalStore(LocalConfig(), Attention(112).state_dict())
        with one_thread():
            store.add_features([(i, _features(rng, 400 + i)) for i in range(n_images)])
        return store
    return make


def test_store_saves_and_reads_back_every_image(tmp_path, make_store):
    rng = np.random.default_rng(1)
    store = make_store(rng)
    before = {i: store.features(i) for i in store.ids}
    path = str(tmp_path / "x.index.local.h5")
    store.save(path)
    opened = LocalStore.open(path)
    assert opened.ids == list(range(6)) and opened.config == store.config
    for i, f in before.items():
        g = opened.features(i)
        assert g.size == f.size == (300, 400)
        assert np.allclose(g.xy, f.xy) and np.array_equal(g.scales, f.scales)
        assert np.allclose(g.scores, f.scores, rtol=1e-3) and np.array_equal(g.descriptors, f.descriptors)
    assert all(torch.equal(opened.attention_state[k], v) for k, v in store.attention_state.items())
    # removing and adding keep working on an opened store, and a second save keeps the result
    opened.remove([2, 4])
    opened.add_features([(9, _features(rng, 50))])
    assert opened.ids == [0, 1, 3, 5, 9]
    opened.save(path)
    assert LocalStore.open(path).ids == [0, 1, 3, 5, 9]
    with pytest.raises(KeyError):
        opened.features(2)
    # a file knows whose features it holds (an index's creation time)
    opened.save(path, owner="1700000000.5")
    assert LocalStore.open(path, owner="1700000000.5").ids == [0, 1, 3, 5, 9]
    with pytest.raises(IndexFileError, match="another index"):
        LocalStore.open(path, owner="1800000000.0")


def test_bytes_per_image_raw_and_quantised(make_store):
    store = make_store(np.random.default_rng(2))
    b = store.bytes_per_image()
    n = b["features"]
    assert n == pytest.approx(402.5)
    # stored: x, y float32 + scale index u1 + score float16 + 20 PQ bytes; raw: float32 everything, 40-d
    assert b["stored"] == pytest.approx(n * (8 + 1 + 2 + 20))
    assert b["raw"] == pytest.approx(n * (8 + 4 + 4 + 160))


def test_damaged_or_foreign_files_are_refused(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(IndexFileError):
        LocalStore.open(str(bad))
    with pytest.raises(IndexFileError):
        LocalStore.open(str(tmp_path / "missing.h5"))
