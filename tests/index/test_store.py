import os

import numpy as np
import pytest

from imret.config import IndexConfig, Preset, WhiteningConfig
from imret.errors import IndexFileError
from imret.index.store import Index


def _index(kind="flat", dim=32):
    return Index(Preset(index=IndexConfig(kind=kind), whitening=WhiteningConfig(kind="none")), dim)


def _data(rng, n=300, dim=32):
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return [f"/photos/img_{i:05d}.jpg" for i in range(n)], x


def test_search_finds_noisy_copies(rng):
    paths, x = _data(rng)
    idx = _index()
    idx.add_descriptors(paths, x)
    hits = idx.search(x[:20] + 0.05 * rng.normal(size=(20, 32)).astype(np.float32), top=5)
    assert [h[0].path for h in hits] == paths[:20]
    assert all(h[0].score > h[1].score for h in hits)
    assert [h.rank for h in hits[0]] == [1, 2, 3, 4, 5]


def test_ids_are_stable_across_removals(rng):
    paths, x = _data(rng, 10)
    idx = _index()
    idx.add_descriptors(paths, x)
    idx.remove([paths[3], paths[7]])
    assert len(idx) == 8
    assert idx.search(x[8:9], top=1)[0][0].id == 8
    assert idx.path_of(9) == paths[9]
    with pytest.raises(KeyError):
        idx.path_of(3)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "hnsw-sq8", "ivfpq"])
def test_add_remove_matches_fresh_build(kind, rng, tmp_path):
    paths, x = _data(rng, 2000)
    a = _index(kind)
    a.add_descriptors(paths[:1500], x[:1500])
    a.add_descriptors(paths[1500:], x[1500:])
    a.remove(paths[100:400])
    keep = [i for i in range(2000) if not 100 <= i < 400]
    b = _index(kind)
    b.add_descriptors([paths[i] for i in keep], x[keep])
    assert a.paths == b.paths
    q = x[::50]
    ha, hb = a.search(q, top=10), b.search(q, top=10)
    if kind == "flat":
        assert [[h.path for h in r] for r in ha] == [[h.path for h in r] for r in hb]
    else:  # approximate: the exact neighbour (the row itself, when present) is still found first
        for i, (ra, rb) in enumerate(zip(ha, hb)):
            src = paths[i * 50]
            if src in a.paths:
                assert ra[0].path == src and rb[0].path == src
    # and it survives a save/load round trip
    a.save(tmp_path / "a.index")
    c = Index.load(tmp_path / "a.index")
    assert c.backend.name == kind and len(c) == len(a)
    assert [[h.path for h in r] for r in c.search(q, top=10)] == [[h.path for h in r] for r in ha]


def test_approximate_backends_recall(rng):
    paths, x = _data(rng, 5000, 64)
    exact = _index("flat", 64)
    exact.add_descriptors(paths, x)
    q = rng.normal(size=(50, 64)).astype(np.float32)
    truth = [{h.path for h in r} for r in exact.search(q, top=10)]
    for kind, floor in (("hnsw", 0.8), ("hnsw-sq8", 0.8), ("ivfpq", 0.3)):
        idx = _index(kind, 64)
        idx.add_descriptors(paths, x)
        got = idx.search(q, top=10)
        recall = np.mean([len(t & {h.path for h in r}) / 10 for t, r in zip(truth, got)])
        assert recall >= floor, (kind, recall)


def test_duplicate_paths_refused(rng):
    paths, x = _data(rng, 5)
    idx = _index()
    idx.add_descriptors(paths, x)
    with pytest.raises(ValueError, match="already in the index"):
        idx.add_descriptors(paths[:1], x[:1])


def test_remove_a_folder(rng):
    idx = _index()
    x = rng.normal(size=(4, 32)).astype(np.float32)
    idx.add_descriptors(["/a/1.jpg", "/a/sub/2.jpg", "/ab/3.jpg", "/b/4.jpg"], x)
    assert sorted(idx.remove(["/a"])) == ["/a/1.jpg", "/a/sub/2.jpg"]
    assert idx.paths == ["/ab/3.jpg", "/b/4.jpg"]


def test_load_refuses_a_foreign_file(tmp_path):
    p = tmp_path / "x.index"
    p.write_bytes(os.urandom(1000))
    with pytest.raises(IndexFileError, match="not an imret index"):
        Index.load(p)


def test_config_and_version_travel_with_the_index(rng, tmp_path):
    from imret import __version__
    from imret.index.fileformat import read_container

    paths, x = _data(rng, 3)
    idx = _index()
    idx.add_descriptors(paths, x)
    idx.save(tmp_path / "i.index")
    meta, _ = read_container(tmp_path / "i.index")
    assert meta["imret_version"] == __version__
    assert Preset.from_dict(meta["preset"]) == idx.preset


def test_auto_choice_by_size_and_each_backends_shortlist(rng, monkeypatch):
    from imret.index import choose_kind

    assert [choose_kind(n) for n in (0, 199_999, 200_000, 999_999, 1_000_000, 50_000_000)] == \
        ["flat", "flat", "hnsw", "hnsw", "ivfpq", "ivfpq"]
    paths, x = _data(rng, 3000)
    asked = []
    for kind, cfg, want in (("hnsw", {}, 256), ("ivfpq", {}, 1024), ("ivfpq", {"rescore": 77}, 77)):
        idx = Index(Preset(index=IndexConfig(kind=kind, **cfg), whitening=WhiteningConfig(kind="none")), 32)
        idx.add_descriptors(paths, x)
        real = idx.backend.search
        monkeypatch.setattr(idx.backend, "search", lambda q, k, real=real: (asked.append(k), real(q, k))[1])
        hits = idx.search(x[:2], top=10)[0]
        assert asked[-1] == want and hits[0].path == paths[0]
        assert idx.search(x[:1], top=300)[0][0].path == paths[0] and asked[-1] == max(want, 1200)


def test_tune_changes_search_settings_of_a_built_index(rng, tmp_path):
    import faiss

    from imret.config import ConfigError

    paths, x = _data(rng, 3000)
    idx = _index("ivfpq")
    idx.add_descriptors(paths, x)
    idx.tune(nprobe=3, rescore=40)
    assert faiss.extract_index_ivf(idx.backend.index).nprobe == 3
    assert idx.preset.index.rescore == 40
    idx.save(tmp_path / "t.index")
    back = Index.load(tmp_path / "t.index")  # kept by a save, and applied on load
    assert faiss.extract_index_ivf(back.backend.index).nprobe == 3 and back.preset.index.rescore == 40
    with pytest.raises(ConfigError, match="nprobe must be at least 1"):
        idx.tune(nprobe=0)
    with pytest.raises(ValueError, match="can be tuned"):
        idx.tune(kind="flat")


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_a_mapped_index_searches_changes_and_saves_like_a_loaded_one(kind, rng, tmp_path):
    paths, x = _data(rng, 2500)
    idx = _index(kind)
    idx.add_descriptors(paths[:2000], x[:2000])
    f = tmp_path / "m.index"
    idx.save(f)
    mapped, loaded = Index.load(f, mmap=True), Index.load(f)
    assert isinstance(mapped.descriptors, np.memmap)
    q = x[:40:4]
    assert [[h.path for h in r] for r in mapped.search(q)] == [[h.path for h in r] for r in loaded.search(q)]
    for index in (mapped, loaded):  # changes never write into the read-only map
        index.add_descriptors(paths[2000:], x[2000:])
        index.remove(paths[:10])
    mapped.save(f)  # over the file it maps: written aside and renamed, the map stays valid
    again = Index.load(f)
    assert again.paths == loaded.paths
    assert np.array_equal(again.descriptors, loaded.descriptors)
    assert [h.path for h in again.search(x[2400:2401])[0][:1]] == [paths[2400]]


def test_ivfpq_on_fewer_images_than_its_codebooks_need_is_one_clear_error(tmp_path):
    from imret_cli import run_imret
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"p{i}.png")
    proc = run_imret("index", tmp_path, "--out", tmp_path / "x.index", "--preset", "fast", "--index-kind", "ivfpq",
                     "-q", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "ivfpq needs at least 16 images" in proc.stderr and "--index-kind flat" in proc.stderr
    assert not (tmp_path / "x.index").exists()


def test_a_small_collection_is_centred_and_keeps_it_through_save_and_add(rng, tmp_path):
    from imret.cli_output import info_lines, whitening_note
    from imret.descriptor import Centring

    # 12 images: fewer than PCA-whitening wants (500), enough to centre (10)
    paths, x = _data(rng, n=12, dim=8)
    x += 3.0  # a component every image shares
    idx = Index.from_raw(Preset(index=IndexConfig(kind="flat")), 8, paths, x)
    assert isinstance(idx.whitening, Centring)
    mean = x.astype(np.float64).mean(0)
    expected = (x - mean) / np.linalg.norm(x - mean, axis=1, keepdims=True)
    np.testing.assert_allclose(idx.vectors.rows, expected, atol=1e-5)
    q = x[3:4] + 0.01
    qc = (q - mean) / np.linalg.norm(q - mean)
    assert [h.path for h in idx.search(q, top=3)[0]] == [paths[i] for i in np.argsort(-(expected @ qc[0]))[:3]]
    idx.save(tmp_path / "c.index")
    back = Index.load(tmp_path / "c.index")
    np.testing.assert_array_equal(back.whitening.mean, idx.whitening.mean)
    back.add_descriptors(["/photos/new.jpg"], x[:1] * 2)  # later additions use the stored mean
    np.testing.assert_allclose(back.vectors.rows[-1], (x[0] * 2 - mean) / np.linalg.norm(x[0] * 2 - mean),
                               atol=1e-5)
    assert "centred on the database mean" in whitening_note(back)
    info = back.info()
    info.update(file_bytes=0, bytes_per_image=32)
    assert any(line.startswith("whitening   centring only") for line in info_lines(info, "c.index"))


def test_an_index_built_by_the_library_keeps_the_head_it_ran(tmp_path):
    """Index.build stores the head weights its extractor ran (shipped or given), as 'imret
    index' does: a loaded index then extracts added photos with that head, not with
    whatever the package ships by then."""
    import torch
    from PIL import Image

    from imret.core.digest import weights_digest
    from imret.extractor import Extractor
    from imret.heads.trained import shipped_for
    from imret.presets import get_preset

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    preset = get_preset("lite0-selfsim").replace(whitening=WhiteningConfig(kind="none"))
    shipped = shipped_for(get_preset("lite0-selfsim")).float_state()
    own = {k: v + 0.01 if v.is_floating_point() else v for k, v in shipped.items()}
    for state, answer in ((None, "shipped"), (own, "own")):
        built, _ = Index.build([str(photos)], preset, extractor=Extractor(preset, head_state=state))
        built.save(str(tmp_path / "x.index"))
        loaded = Index.load(str(tmp_path / "x.index"))
        assert loaded.head_weights() == answer
        assert weights_digest(loaded.head_state) == weights_digest(state or shipped)
        ran = loaded.extractor().head.state_dict()
        assert all(torch.equal(ran[k], (state or shipped)[k]) for k in ran)


def test_a_head_the_package_no_longer_ships_is_the_index_own():
    """An index keeps the head it was built with; once the preset's shipped head is another
    (the NetVLAD presets went from 16 to 64 clusters), that head is the index's own."""
    from imret.config import HeadConfig
    from imret.heads import build_head
    from imret.presets import get_preset

    old = get_preset("lite0-ia-netvlad").replace(head=HeadConfig("netvlad", {"attention": "ia", "clusters": 16,
                                                                             "dim": 128}))
    index = Index(old, 16 * 128)
    index.head_state = {k: v.clone() for k, v in build_head(old.head, 1280).state_dict().items()}
    assert index.head_weights() == "own"
    index.head_state = None
    assert index.head_weights() is None


def test_an_index_built_from_raw_descriptors_keeps_the_head_of_its_extractor(tmp_path):
    """The other indexing path (descriptors from a raw source, as Ray's workers give them)
    keeps the head weights as Index.build does."""
    from imret.core.digest import weights_digest
    from imret.heads.trained import shipped_for
    from imret.index.indexer import Indexer
    from imret.presets import get_preset

    preset = get_preset("lite0-selfsim").replace(whitening=WhiteningConfig(kind="none"))
    shipped = shipped_for(get_preset("lite0-selfsim")).float_state()
    own = {k: v + 0.01 if v.is_floating_point() else v for k, v in shipped.items()}
    paths = [f"/photos/p{i}.jpg" for i in range(3)]

    def raw_source(found, ex):  # three descriptors, no photo read
        return paths, np.eye(3, ex.dim, dtype=np.float32), []

    for state, answer in ((None, "shipped"), (own, "own")):
        out = str(tmp_path / f"{answer}.index")
        Indexer(preset, head_state=state).build([str(tmp_path)], out, raw_source=raw_source)
        loaded = Index.load(out)
        assert loaded.head_weights() == answer
        assert weights_digest(loaded.head_state) == weights_digest(state or shipped)
