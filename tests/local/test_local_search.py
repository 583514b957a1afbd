"""Search by local features alone: descriptor votes + verification, and ASMK (asmk package)."""
import numpy as np
import pytest

from imret.local.attention import Attention
from imret.local.search import LocalSearch, asmk_codebook_size, rank_by_votes


@pytest.fixture(scope="module")
def store_and_query(photos, local_extractor, one_thread, tmp_path_factory):
    from imret.local.store import LocalStore

    names = ["astronaut", "coffee", "chelsea", "camera", "rocket"]
    with one_thread():
        feats = [local_extractor.extract(photos[n]) for n in names]
        store = LocalStore(local_extractor.config, local_extractor.attention_state())
        store.add_features(list(zip(range(10, 15), feats)))
        query = store.reduce(local_extractor.extract(photos["astronaut"][60:400, 120:480].copy()))
    return store, query


def test_local_mode_votes_then_verifies_and_scores_by_inliers(store_and_query, one_thread):
    store, query = store_and_query
    assert store.codec.kind == "pq"  # the stored codes are searched as they are
    state = LocalSearch(store)
    with one_thread():
        votes = state.descriptor_index().vote(query, 10, store.config.verify_config.distance)
        hits = state.search("local", query, top=5, shortlist=5)
    assert max(votes, key=votes.get) == 10  # the crop's own photo gets the most votes
    assert hits[0].image_id == 10 and hits[0].score == hits[0].inliers >= 40
    assert all(h.inliers < 12 for h in hits[1:])
    assert [h.inliers for h in hits] == sorted((h.inliers for h in hits), reverse=True)
    # the index follows the store: a removed image is no longer voted for
    store2 = store.copy()
    store2.remove([10])
    assert 10 not in LocalSearch(store2).descriptor_index().vote(query, 10, 0.8)


def test_asmk_mode_ranks_the_crop_first_and_its_codebook_is_saved_as_arrays(store_and_query, tmp_path, one_thread):
    store, query = store_and_query
    path = str(tmp_path / "x.index.asmk.npz")
    with one_thread():
        hits = LocalSearch(store, path, owner="1").search("asmk", query, top=5)
    assert hits[0].image_id == 10 and hits[0].score > hits[1].score
    with np.load(path, allow_pickle=False) as z:  # no pickle inside
        assert z["ids"].tolist() == [10, 11, 12, 13, 14] and z["centroids"].shape[1] == store.codec.dim
        saved = np.array(z["centroids"])
    with one_thread():
        again = LocalSearch(store, path, owner="1")
        hits2 = again.search("asmk", query, top=5)
    np.testing.assert_array_equal(again.asmk_index().centroids, saved)  # loaded, not learned again
    assert [h.image_id for h in hits2] == [h.image_id for h in hits]


def test_votes_rank_and_codebook_size():
    assert rank_by_votes({3: 5, 1: 5, 7: 9, 2: 1}, 3) == [7, 1, 3]
    assert asmk_codebook_size(100) == 64 and asmk_codebook_size(102_400) == 1024 and asmk_codebook_size(10 ** 9) == 65536


def test_an_index_searched_by_local_features_marks_hits_verified_by_the_recipes_bound(
        store_and_query, photos, one_thread):
    from imret.config import IndexConfig, Preset, WhiteningConfig
    from imret.index.local_modes import search_index
    from imret.index.store import Index

    store, _ = store_and_query
    index = Index(Preset(index=IndexConfig(kind="flat"), whitening=WhiteningConfig(kind="none")), 4)
    index.append_rows(np.arange(10, 15), [f"/p/{i}.jpg" for i in range(10, 15)], np.eye(5, 4, dtype=np.float32))
    index.local = store
    with one_thread():
        hits = search_index(index, photos["astronaut"][60:400, 120:480].copy(), "local", top=5, shortlist=5)
    from imret.local.steps import SpatialVerification

    least = SpatialVerification().min_inliers  # 12, as 'sv' verifies
    assert hits[0].path == "/p/10.jpg" and hits[0].verified and hits[0].inliers >= least
    assert all(h.verified == (h.inliers >= least) for h in hits)
    assert not all(h.verified for h in hits)
