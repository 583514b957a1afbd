"""Local features through the real ``imret`` entry point, in separate processes."""
import json
import os
import shutil

import pytest
from PIL import Image

from imret_cli import ONE_THREAD, run_imret


def imret(*args, ok=True):
    return run_imret(*args, check=ok, env=ONE_THREAD)


@pytest.fixture(scope="module")
def indexed(photoset, tmp_path_factory):
    root = tmp_path_factory.mktemp("local-cli")
    db = root / "db"
    db.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "camera", "distractor_000", "distractor_001"):
        src = next(p for p in photoset.db if os.path.basename(p).startswith(name + "."))
        shutil.copy(src, db)
    index = root / "my.index"
    imret("index", db, "--out", index, "--preset", "fast", "--local", "fast", "-q")
    query = next(q for q in photoset.queries if os.path.basename(q) == "coffee__occlude.jpg")
    return root, db, index, query


def test_index_local_and_search_rerank_sv(indexed):
    root, db, index, query = indexed
    assert os.path.exists(str(index) + ".local.h5")
    info = imret("info", index).stdout
    assert "local       6 images" in info and "pq (20 bytes each)" in info
    out = json.loads(imret("search", index, query, "--rerank", "sv", "--top", "3", "--json", "--matches").stdout)
    assert out["rerank"].startswith("sv:")
    top = out["results"][0]
    assert os.path.basename(top["path"]) == "coffee.png"
    assert top["inliers"] >= 50 and len(top["matches"]) == top["inliers"] and len(top["matches"][0]) == 4
    assert all(r["inliers"] < 12 for r in out["results"][1:])
    # the ranking score is the cosine plus sv's bonus (weight 0.002 per inlier): two named numbers
    assert top["verified"] and top["match"] and top["cosine"] <= 1.0
    assert abs(top["score"] - (top["cosine"] + 0.002 * top["inliers"])) < 1e-5
    assert not any(r["verified"] for r in out["results"][1:])
    plain = json.loads(imret("search", index, query, "--rerank", "sv", "--top", "3", "--json").stdout)
    assert all("matches" not in r for r in plain["results"])  # coordinates only with --matches
    assert [r["inliers"] for r in plain["results"]] == [r["inliers"] for r in out["results"]]
    table = imret("search", index, query, "--rerank", "svh:shortlist=3", "--top", "2")
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["rank", "cosine", "inliers", "match", "path"]
    assert "coffee.png" in lines[1] and " ok " in lines[1] and " low " in lines[2]
    assert "'ok' verifies the result (at least 12)" in table.stderr


def test_show_matches_counts_the_inliers_search_counts(indexed, tmp_path):
    root, db, index, query = indexed
    found = json.loads(imret("search", index, query, "--rerank", "sv", "--top", "2", "--json").stdout)["results"]
    for r in found:
        proc = imret("show-matches", query, r["path"], "--out", tmp_path / "m.png", "--index", index)
        assert f": {r['inliers']} inliers of" in proc.stderr, (r, proc.stderr)
        assert f"query {query} (left) against {r['path']} (right)" in proc.stderr


def test_search_rerank_sv_needs_local_features(indexed, tmp_path):
    _, db, _, query = indexed
    plain = tmp_path / "plain.index"
    imret("index", db, "--out", plain, "--preset", "fast", "-q")
    proc = imret("search", plain, query, "--rerank", "sv", ok=False)
    assert proc.returncode == 1 and "imret index --local" in proc.stderr
    bad = imret("search", plain, query, "--rerank", "sv:min_inliers=x", ok=False)
    assert bad.returncode == 2 and "min_inliers must be an integer" in bad.stderr


def test_show_matches_and_show_attention_write_pictures(indexed, tmp_path):
    root, db, index, query = indexed
    m = tmp_path / "m.png"
    proc = imret("show-matches", query, db / "coffee.png", "--out", m, "--index", index)
    assert "inliers of" in proc.stderr
    with Image.open(m) as im:
        assert im.width > 2 * 400 and im.height > 480  # two images side by side at 480 px, a caption above
    a = tmp_path / "a.png"
    proc = imret("show-attention", db / "astronaut.png", "--out", a, "--local", "fast")
    assert "keypoints" in proc.stderr
    with Image.open(a) as im:
        assert im.size[1] > 480 and im.mode == "RGB"


def test_train_local_then_index_with_the_trained_attention(indexed, tmp_path):
    root, db, _, query = indexed
    att = tmp_path / "att.pt"
    proc = imret("train", db, "--local", "fast", "--steps", "10", "--batch", "4", "--views", "2",
                 "--max-size", "160", "--out", att, "-q")
    assert att.exists() and "loss" in proc.stderr
    wrong = imret("train", db, "--local", "--loss", "triplet", "--out", tmp_path / "x.pt", ok=False)
    assert wrong.returncode == 2 and "--loss" in wrong.stderr
    index = tmp_path / "trained.index"
    imret("index", db, "--out", index, "--preset", "fast", "--attention", att, "-q")
    top = json.loads(imret("search", index, query, "--rerank", "sv", "--top", "1", "--json").stdout)["results"][0]
    assert os.path.basename(top["path"]) == "coffee.png" and top["inliers"] >= 12


def test_widen_verifies_the_most_voted_images_beyond_the_shortlist(indexed):
    root, db, index, query = indexed

    def verified_count(spec):
        out = json.loads(imret("search", index, query, "--rerank", spec, "--top", "6", "--json").stdout)
        return sum(r.get("inliers") is not None for r in out["results"]), out["results"]

    alone, _ = verified_count("sv:shortlist=1")
    wide, results = verified_count("sv:shortlist=1,widen=3")
    assert (alone, wide) == (1, 4)
    assert os.path.basename(results[0]["path"]) == "coffee.png" and results[0]["verified"]
