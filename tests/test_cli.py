"""The ``imret`` command through its real entry point, in separate processes."""
import json
import os
import shutil
import zlib

import numpy as np
import pytest
from PIL import Image

from imret_cli import run_imret


def imret(*args, check=True):
    return run_imret(*args, check=check)


def _huge_png(path):
    Image.new("L", (8, 8)).save(path)
    data = bytearray(open(path, "rb").read())
    data[16:24] = (70000).to_bytes(4, "big") + (70000).to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    open(path, "wb").write(bytes(data))


@pytest.fixture(scope="module")
def folders(photoset, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    photos = root / "photos"
    more = root / "more"
    photos.mkdir()
    more.mkdir()
    originals = [p for p in photoset.db if "distractor" not in p][:8]
    for p in originals[:6]:
        shutil.copy(p, photos)
    for p in originals[6:]:
        shutil.copy(p, more)
    rgb = np.asarray(Image.open(originals[0]).convert("RGB"))
    # odd but valid images: indexed
    Image.fromarray(rgb).convert("L").save(photos / "gray.png")
    Image.fromarray(rgb).convert("CMYK").save(photos / "cmyk.jpg")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(photos / "sixteen.png")
    Image.fromarray(rgb).convert("P").save(photos / "palette.png")
    # broken files: reported by name and skipped
    bad = {
        "zero.jpg": "empty file",
        "notes.jpg": "not an image",
        "broken.jpg": "corrupt or truncated",
        "bomb.png": "pixels",
    }
    (photos / "zero.jpg").write_bytes(b"")
    (photos / "notes.jpg").write_text("this is not a photo\n")
    jpg = open(photoset.queries[0], "rb").read()
    (photos / "broken.jpg").write_bytes(jpg[: len(jpg) // 3])
    _huge_png(photos / "bomb.png")
    return root, photos, more, originals, bad


def test_index_reports_bad_files_and_indexes_the_rest(folders):
    root, photos, _, _, bad = folders
    out = root / "a.index"
    proc = imret("index", photos, "--out", out, "--preset", "fast", "-q")
    for name, reason in bad.items():
        line = next((l for l in proc.stderr.splitlines() if name in l), "")
        assert reason in line, (name, proc.stderr)
    info = json.loads(imret("info", out, "--json").stdout)
    assert info["images"] == 6 + 4
    assert info["preset"]["name"] == "fast"
    assert info["head_weights"] is None  # GeM has nothing to learn
    log = (root / "a.index.skipped.tsv").read_text()
    assert all(name in log for name in bad)


def test_search_finds_the_original_and_survives_restart(folders, photoset):
    root, photos, _, originals, _ = folders
    out = root / "a.index"
    name = os.path.basename(originals[2])
    query = next(q for q in photoset.queries if os.path.basename(q).startswith(name[:-4] + "__crop"))
    res = json.loads(imret("search", out, query, "--top", "3", "--json").stdout)
    assert os.path.basename(res["results"][0]["path"]) == name
    assert [r["rank"] for r in res["results"]] == [1, 2, 3]
    assert res["results"][0]["score"] > res["results"][1]["score"]
    table = imret("search", out, query, "--top", "2").stdout.splitlines()
    assert table[0].split() == ["rank", "cosine", "match", "path"] and table[1].endswith(name)


def test_bbox_query(folders):
    root, photos, _, originals, _ = folders
    w, h = Image.open(originals[1]).size
    res = json.loads(imret("search", root / "a.index", originals[1], "--bbox", f"0,0,{w // 2},{h // 2}",
                           "--json").stdout)
    assert os.path.basename(res["results"][0]["path"]) == os.path.basename(originals[1])
    assert res["results"][0]["score"] < 0.999  # the crop is not the whole image
    assert imret("search", root / "a.index", originals[1], "--bbox", "5,5,1,1", check=False).returncode == 2


def test_backend_and_its_tuning_are_chosen_on_the_command_line_and_kept(folders, photoset):
    root, photos, _, originals, _ = folders
    out = root / "sq8.index"
    imret("index", photos, "--out", out, "--preset", "fast", "-q", "--index-kind", "hnsw-sq8",
          "--ef-search", "40", "--rescore", "30")
    info = json.loads(imret("info", out, "--json").stdout)
    assert info["backend"] == "hnsw-sq8"
    assert info["preset"]["index"]["ef_search"] == 40 and info["preset"]["index"]["rescore"] == 30
    name = os.path.basename(originals[2])
    query = next(q for q in photoset.queries if os.path.basename(q).startswith(name[:-4] + "__crop"))
    exact = json.loads(imret("search", root / "a.index", query, "--top", "5", "--json").stdout)["results"]
    approx = json.loads(imret("search", out, query, "--top", "5", "--json").stdout)["results"]
    # ten images: the shortlist holds them all, and its exact re-scoring gives the exact ranking
    assert [r["path"] for r in approx] == [r["path"] for r in exact]
    assert np.allclose([r["score"] for r in approx], [r["score"] for r in exact], atol=1e-5)
    bad = imret("index", photos, "--out", root / "x.index", "--nprobe", "0", check=False)
    assert bad.returncode != 0 and "nprobe must be at least 1" in bad.stderr
    wide = json.loads(imret("search", out, query, "--top", "5", "--json", "--ef-search", "200").stdout)["results"]
    assert [r["path"] for r in wide] == [r["path"] for r in exact]
    bad = imret("search", out, query, "--rescore", "0", check=False)
    assert bad.returncode != 0 and "rescore must be at least 1" in bad.stderr


def test_add_and_remove_match_a_fresh_build(folders, photoset):
    root, photos, more, originals, _ = folders
    inc = root / "inc.index"
    shutil.copy(root / "a.index", inc)
    proc = imret("add", inc, more, photos, "-q")
    assert "indexed 2" in proc.stderr and "already in the index 10" in proc.stderr
    gone = photos / os.path.basename(originals[0])
    assert str(gone) in imret("remove", inc, gone).stdout
    # fresh build of the same final set
    final = root / "final"
    final.mkdir()
    for p in list(photos.iterdir()) + list(more.iterdir()):
        if p != gone:
            shutil.copy(p, final)
    fresh = root / "fresh.index"
    # what a.index learned at build time (the mean of its 10 photos, centring) stays through
    # add and remove: the fresh build learns it from the same photos
    imret("index", final, "--out", fresh, "--preset", "fast", "-q", "--whiten-on", photos)
    q = photoset.queries[5]
    a = json.loads(imret("search", inc, q, "--top", "20", "--json").stdout)["results"]
    b = json.loads(imret("search", fresh, q, "--top", "20", "--json").stdout)["results"]
    assert [os.path.basename(r["path"]) for r in a] == [os.path.basename(r["path"]) for r in b]
    assert np.allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-5)
    assert len(a) == 11


def test_eval_on_an_instance_folder(tmp_path, photoset):
    root = tmp_path / "inst"
    for name in ("astronaut", "coffee", "chelsea"):
        d = root / name
        d.mkdir(parents=True)
        shutil.copy(os.path.join(photoset.root, "db", f"{name}.png"), d)
        for t in ("crop", "jpeg"):
            shutil.copy(os.path.join(photoset.root, "queries", f"{name}__{t}.jpg"), d)
    res = json.loads(imret("eval", "--dataset", root, "--preset", "fast", "--json", "-q").stdout)
    assert res["protocol"] == "instances" and res["queries"] == 9
    assert res["figures"]["mAP"] > 80 and res["figures"]["R@1"] > 80
    text = imret("eval", "--dataset", root, "--preset", "fast", "-q").stdout
    assert "mAP" in text and "instances" in text


def test_clear_errors(tmp_path):
    proc = imret("search", tmp_path / "missing.index", "q.jpg", check=False)
    assert proc.returncode == 1 and "missing.index: no such index file" in proc.stderr
    proc = imret("index", tmp_path, "--out", tmp_path / "x.index", "--preset", "nope", check=False)
    assert proc.returncode == 1 and "unknown preset 'nope'" in proc.stderr
    proc = imret("index", tmp_path, "--out", tmp_path / "x.index", "--preset", "resnet50-gem", check=False)
    assert proc.returncode == 1 and "--weights" in proc.stderr
    assert "default" in imret("presets").stdout
