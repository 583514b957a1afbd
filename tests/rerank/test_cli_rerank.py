"""``--rerank`` and ``--dba`` through the real ``imret`` entry point, in separate processes."""
import json
import os
import shutil

import pytest

from imret_cli import run_imret


def run(*args):
    return run_imret(*args, check=False)


@pytest.fixture(scope="module")
def small(photoset, tmp_path_factory):
    """Six originals as the photos, their crops as queries; the same as a photo-set layout dataset."""
    root = tmp_path_factory.mktemp("cli_rerank")
    photos = root / "photos"
    photos.mkdir()
    originals = sorted(p for p in photoset.db if "distractor" not in p)[:6]
    for p in originals:
        shutil.copy(p, photos)
    queries = [q for q in photoset.queries if q.endswith("__crop.jpg") and photoset.positives[q][0] in originals]
    data = root / "data"
    data.mkdir()
    (data / "ground_truth.json").write_text(json.dumps(
        {"db": originals, "queries": queries, "positives": {q: photoset.positives[q] for q in queries}}))
    return root, photos, queries, data


def test_index_with_dba_then_search_and_eval_with_rerank(small):
    root, photos, queries, data = small
    out = root / "photos.index"
    proc = run("index", photos, "--out", out, "--preset", "fast", "--dba", "k=2,alpha=3", "-q")
    assert proc.returncode == 0, proc.stderr
    info = run("info", out)
    assert "αDBA rows stored, k=2, alpha=3" in info.stdout, info.stdout

    query = queries[0]
    expected = os.path.basename(query).split("__")[0] + ".png"
    proc = run("search", out, query, "--top", "3", "--rerank", "aqe:n=2,gfr", "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["rerank"] == ("aqe:n=2,alpha=3,shortlist=100,scope=database,"
                             "gfr:k=2,alpha=3,weights=none,self_weight=1,shortlist=100,scope=database")
    assert [r["rank"] for r in res["results"]] == [1, 2, 3]
    assert os.path.basename(res["results"][0]["path"]) == expected
    assert "computing" not in proc.stderr  # the stored αDBA rows were used

    proc = run("search", out, query, "--rerank", "dba:k=3,kreciprocal")
    assert proc.returncode == 0, proc.stderr
    assert "stores dba:k=2,alpha=3; computing dba:k=3,alpha=3 for this search" in proc.stderr
    assert proc.stdout.splitlines()[1].split()[0] == "1" and proc.stdout.splitlines()[1].endswith(expected)

    proc = run("eval", "--dataset", data, "--preset", "fast", "--rerank", "dba,aqe", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "re-ranked by dba:k=2,alpha=3,aqe:n=2,alpha=3,shortlist=100" in proc.stdout
    assert "mAP" in proc.stdout


@pytest.mark.parametrize("spec, message", [
    ("aqe:n=0", "aqe: n must be an integer ≥ 1, got 0"),
    ("aqe,dba", "dba changes the database before the search, so it must come first"),
    ("sift", "unknown re-ranking step 'sift'"),
    ("aqe:alpha=__import__('os').system('false')", "aqe: alpha must be a number"),
])
def test_bad_rerank_specs_are_usage_errors(spec, message, tmp_path):
    proc = run("search", tmp_path / "none.index", "q.jpg", "--rerank", spec)
    assert proc.returncode == 2
    assert f"argument --rerank: {message}" in proc.stderr


def test_bad_dba_parameters_fail_before_any_extraction(small, tmp_path):
    _, photos, _, _ = small
    proc = run("index", photos, "--out", tmp_path / "x.index", "--preset", "fast", "--dba", "k=-1", "-q")
    assert proc.returncode != 0 and "dba: k must be an integer ≥ 1" in proc.stderr
    assert not (tmp_path / "x.index").exists()
