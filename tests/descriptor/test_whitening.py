import dataclasses

import numpy as np
import pytest

from imret.descriptor import Centring, PCAWhitening, l2_normalize


def test_full_whitening_decorrelates_training_data(rng):
    mix = rng.normal(size=(16, 16))
    x = rng.normal(size=(2000, 16)) @ mix + 5.0
    w = PCAWhitening.fit(x, power=0.5, shrinkage=0.0)
    y = (x - w.mean) @ w.projection.T  # before the final L2
    cov = np.cov(y, rowvar=False)
    assert np.allclose(cov, np.eye(16), atol=0.05)


def test_output_is_unit_norm_and_reduced(rng):
    x = rng.normal(size=(300, 32)).astype(np.float32)
    w = PCAWhitening.fit(x, dim=8)
    out = w.apply(x[:10])
    assert out.shape == (10, 8) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)


def test_few_samples_keep_at_most_n_minus_1_components(rng):
    w = PCAWhitening.fit(rng.normal(size=(5, 32)))
    assert w.out_dim == 4


def test_power_zero_is_a_rotation(rng):
    x = rng.normal(size=(200, 6))
    w = PCAWhitening.fit(x, power=0.0)
    y = (x - w.mean) @ w.projection.T
    # a rotation keeps distances between points
    assert np.allclose(np.linalg.norm(y[0] - y[1]), np.linalg.norm(x[0] - x[1]), rtol=1e-4)


def test_whitening_helps_when_a_direction_dominates(rng):
    """A strong nuisance direction shared by all images hides identity; whitening removes it."""
    n, d = 400, 24
    ids = rng.normal(size=(n, d)) * 0.3
    nuisance = np.zeros(d)
    nuisance[0] = 1.0
    db = ids + rng.normal(size=(n, 1)) * 3.0 * nuisance
    queries = ids + rng.normal(size=(n, d)) * 0.1 + rng.normal(size=(n, 1)) * 3.0 * nuisance
    plain = (np.argmax(l2_normalize(queries) @ l2_normalize(db).T, 1) == np.arange(n)).mean()
    w = PCAWhitening.fit(db)
    white = (np.argmax(w.apply(queries) @ w.apply(db).T, 1) == np.arange(n)).mean()
    assert white > plain + 0.2


def test_dimension_mismatch_is_an_error(rng):
    w = PCAWhitening.fit(rng.normal(size=(50, 8)))
    with pytest.raises(ValueError, match="expects 8-d"):
        w.apply(np.zeros((1, 9)))


def test_centring_subtracts_the_database_mean_by_hand():
    from imret.descriptor import Centring

    c = Centring.fit(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))  # mean (2/3, 2/3)
    np.testing.assert_allclose(c.mean, [2 / 3, 2 / 3], rtol=1e-6)
    # (1, 0) − mean = (1/3, −2/3) → (1, −2)/√5; (3, 3) − mean = (7/3, 7/3) → (1, 1)/√2
    np.testing.assert_allclose(c.apply(np.array([[1.0, 0.0], [3.0, 3.0]])),
                               [[1 / 5**0.5, -2 / 5**0.5], [2**-0.5, 2**-0.5]], atol=1e-6)
    assert c.in_dim == c.out_dim == 2
    with pytest.raises(ValueError, match="3-d"):
        c.apply(np.ones((1, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        Centring.fit(np.ones((1, 2)))


def test_stored_transforms_come_back_as_they_were(rng):
    from imret.descriptor import Centring, transform_from

    x = rng.normal(size=(50, 6))
    for t in (Centring.fit(x), PCAWhitening.fit(x, dim=4, power=0.25)):
        back = transform_from(t.header(), t.arrays())
        assert type(back) is type(t) and back.header() == t.header()
        np.testing.assert_array_equal(back.apply(x[:3]), t.apply(x[:3]))
    # files written before centring existed say only the power: PCA
    w = PCAWhitening.fit(x, power=0.5)
    assert isinstance(transform_from({"power": 0.5}, w.arrays()), PCAWhitening)


def test_what_a_collection_of_n_images_learns():
    from imret.config import ConfigError, WhiteningConfig

    pca = WhiteningConfig()
    assert [pca.learned_from(n) for n in (9, 10, 499, 500)] == ["none", "center", "center", "pca"]
    assert WhiteningConfig(kind="center").learned_from(10_000) == "center"
    assert WhiteningConfig(kind="none").learned_from(10_000) == "none"
    assert WhiteningConfig(center_min_images=600).learned_from(550) == "pca"  # never centring only
    with pytest.raises(ConfigError, match="center_min_images"):
        WhiteningConfig(center_min_images=1)
    with pytest.raises(ConfigError, match="'none', 'pca' or 'center'"):
        WhiteningConfig(kind="zca")


def test_learn_fits_what_the_config_asks_for_that_many_rows(rng):
    from imret.config import WhiteningConfig
    from imret.descriptor import Centring, kind_of, learn

    cfg = WhiteningConfig(min_images=20, center_min_images=10, dim=3, power=0.25)
    assert learn(cfg, rng.normal(size=(9, 6))) is None
    c = learn(cfg, rng.normal(size=(12, 6)))
    assert isinstance(c, Centring) and kind_of(c) == "center"
    w = learn(cfg, rng.normal(size=(25, 6)))
    assert isinstance(w, PCAWhitening) and (w.out_dim, w.power) == (3, 0.25) and kind_of(w) == "pca"
    assert kind_of(None) == "none"


def test_pca_whitening_by_hand():
    """Four points around (10, 0): variances 8/3 along x and 2/3 along y (n − 1 = 3);
    shrinkage 0.5 adds half the largest, so the eigenvalues become 4 and 2."""
    x = np.array([[12.0, 0.0], [8.0, 0.0], [10.0, 1.0], [10.0, -1.0]])
    w = PCAWhitening.fit(x, shrinkage=0.5)
    np.testing.assert_allclose(w.mean, [10.0, 0.0], atol=1e-6)
    # rows: eigenvectors over √eigenvalue (an eigenvector's sign is arbitrary)
    np.testing.assert_allclose(np.abs(w.projection), [[1 / 2, 0.0], [0.0, 2**-0.5]], atol=1e-6)
    # (11, 1) − mean = (1, 1) → (1/2, 1/√2) → L2: (1, √2)/√3
    np.testing.assert_allclose(np.abs(w.apply(np.array([[11.0, 1.0]]))), [[3**-0.5, (2 / 3) ** 0.5]], atol=1e-6)
    assert w.header() == {"kind": "pca", "dim": 2, "power": 0.5}


def test_two_descriptors_are_enough_and_dim_is_capped_at_n_minus_1(rng):
    assert PCAWhitening.fit(rng.normal(size=(2, 6))).out_dim == 1
    assert Centring.fit(rng.normal(size=(2, 6))).header() == {"kind": "center", "dim": 6}
    assert PCAWhitening.fit(rng.normal(size=(3, 6)), dim=5).out_dim == 2
    with pytest.raises(ValueError, match=r"^PCA-whitening needs at least 2 descriptors, got 1$"):
        PCAWhitening.fit(np.ones((1, 6)))
    with pytest.raises(ValueError, match=r"^centring needs at least 2 descriptors, got 1$"):
        Centring.fit(np.ones((1, 6)))


def test_one_descriptor_as_a_vector_and_exact_errors(rng):
    x = rng.normal(size=(20, 8))
    for t, word in ((PCAWhitening.fit(x), "whitening"), (Centring.fit(x), "centring")):
        np.testing.assert_allclose(t.apply(x[0]), t.apply(x[:1])[0], atol=1e-6)
        with pytest.raises(ValueError, match=rf"^{word} expects 8-d descriptors, got 9-d$"):
            t.apply(np.zeros(9))
        with pytest.raises(dataclasses.FrozenInstanceError):
            t.mean = np.zeros(8)
    np.testing.assert_allclose(l2_normalize(np.array([3.0, 4.0])), [0.6, 0.8], atol=1e-7)
    assert PCAWhitening(np.zeros(2, np.float32), np.eye(2, dtype=np.float32)).power == 0.5
