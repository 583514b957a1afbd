"""Bad command lines end in one clear line and a non-zero exit; what was built is said plainly."""
import json
import shutil

import pytest
import torch

from imret import cli_output
from imret_cli import run_imret


@pytest.fixture(scope="module")
def small(photoset, tmp_path_factory):
    root = tmp_path_factory.mktemp("checks")
    photos = root / "photos"
    photos.mkdir()
    for p in [p for p in photoset.db if "distractor" not in p][:4]:
        shutil.copy(p, photos)
    out = root / "s.index"
    proc = run_imret("index", photos, "--out", out, "--preset", "fast", "-q", "--nprobe", "4")
    return root, photos, out, proc


def _one_error_line(proc, *words):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and all(w in errors[0] for w in words), proc.stderr


@pytest.mark.parametrize("top", ["0", "-3", "two"])
def test_search_rejects_a_top_below_one(small, top):
    root, photos, out, _ = small
    proc = run_imret("search", out, next(photos.iterdir()), "--top", top, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    _one_error_line(proc, "--top")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine accepts --device cuda")
@pytest.mark.parametrize("device, why", [("cuda", "no CUDA"), ("cuda:0", "no CUDA"), ("gpu", "unknown device")])
def test_an_unusable_device_is_one_line(small, device, why):
    root, photos, out, _ = small
    proc = run_imret("search", out, next(photos.iterdir()), "--device", device, check=False)
    _one_error_line(proc, "--device", why)


def test_check_device_wording():
    assert cli_output.check_device("cpu") == "cpu"
    assert cli_output.check_device("auto") == "auto"
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        cli_output.check_device("gpu")
    with pytest.raises(ValueError, match="unsupported device 'meta'"):
        cli_output.check_device("meta")


def test_remove_says_which_paths_are_not_in_the_index(small):
    root, photos, out, _ = small
    copy = root / "r.index"
    shutil.copy(out, copy)
    proc = run_imret("remove", copy, root / "nowhere.jpg", check=False)
    assert proc.returncode == 1
    assert f"not in {copy}: {root / 'nowhere.jpg'}" in proc.stderr and "removed 0; 4 images" in proc.stderr
    first = sorted(photos.iterdir())[0]
    proc = run_imret("remove", copy, first, root / "nowhere.jpg", check=False)
    # one of two named: the found one is removed (and saved), the other named, exit 1
    assert proc.returncode == 1 and str(first) in proc.stdout and "nowhere.jpg" in proc.stderr
    assert json.loads(run_imret("info", copy, "--json").stdout)["images"] == 3


def test_not_matched_handles_files_and_folders():
    removed = ["/a/b/x.jpg", "/a/b/y.jpg"]
    assert cli_output.not_matched(["/a/b", "/a/b/x.jpg", "/a/bc", "/z.jpg"], removed) == ["/a/bc", "/z.jpg"]


def test_tuning_a_backend_that_ignores_it(small):
    root, photos, out, build = small
    # at index time: a note (the backend may be chosen by size); at search time: an error
    assert "note: --nprobe: this index uses the flat (exact search) backend, which ignores it" in build.stderr
    proc = run_imret("search", out, next(photos.iterdir()), "--nprobe", "8", check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    _one_error_line(proc, "--nprobe", "flat", "applies to ivfpq")
    assert cli_output.unused_tuning("hnsw", {"ef_search": 4, "rescore": 9}) is None
    assert "--ef-search, --nprobe" in cli_output.unused_tuning("milvus", {"ef_search": 4, "nprobe": 2})


def test_whitening_skip_is_said_at_index_time_and_in_info(small):
    root, photos, out, build = small
    assert "note: whitening skipped" in build.stderr and "this index has 4" in build.stderr
    info = run_imret("info", out).stdout
    assert "whitening   none: skipped, the preset learns it from 500 images on" in info
    assert "backend     flat (exact search)" in info
    assert "exact search" not in info.split("backend")[0]  # the preset's plan is not printed as a fact


def test_ivfpq_on_a_small_collection_is_quiet_but_says_so(small, photoset):
    root, _, _, _ = small
    photos = root / "twenty"
    photos.mkdir()
    for p in photoset.db[:20]:  # 4-bit PQ needs at least 16 training points
        shutil.copy(p, photos)
    proc = run_imret("index", photos, "--out", root / "pq.index", "--preset", "fast", "-q", "--index-kind", "ivfpq")
    assert "WARNING clustering" not in proc.stderr
    assert "note: ivfpq on 20 images" in proc.stderr
    assert "ivfpq (approximate" in run_imret("info", root / "pq.index").stdout


def test_untrained_head_is_told_by_its_weights_not_its_name():
    from imret.config import HeadConfig
    from imret.heads import HEADS, build_head

    cfg = HeadConfig("dagf", {"spatial": True, "channel": True, "scales": 3, "max_mask": True})
    with torch.random.fork_rng(devices=[]):  # the starting weights, as build_head draws them
        torch.manual_seed(0)
        head = HEADS.get("dagf")(8, **cfg.params)
    assert cli_output.head_is_untrained(head, cfg, 8)
    with torch.no_grad():  # weights from anywhere else (a checkpoint, shipped weights) count as trained
        next(p for p in head.parameters() if p.requires_grad).add_(0.5)
    assert not cli_output.head_is_untrained(head, cfg, 8)
    gem = HeadConfig("gem", {"p": 3.0})
    assert not cli_output.head_is_untrained(build_head(gem, 8), gem, 8)  # nothing to train: no warning


def test_cut_off_marks_matches_and_says_when_there_is_none(small, photoset):
    root, photos, out, _ = small
    query = sorted(photos.iterdir())[0]
    res = json.loads(run_imret("search", out, query, "--json", "--top", "4").stdout)
    assert res["min_score"] == 0.75
    first = res["results"][0]
    assert first["path"] == str(query) and first["match"] and abs(first["cosine"] - 1.0) < 1e-5
    assert all(r["match"] == (r["cosine"] >= 0.75) for r in res["results"])
    assert all("inliers" not in r for r in res["results"])  # no verification ran: no inlier fields
    proc = run_imret("search", out, query, "--top", "4", "--min-score", "1.0")
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["rank", "cosine", "match", "path"]
    assert all(line.split()[2] == "no" for line in lines[2:])
    strict = run_imret("search", out, next(p for p in photoset.db if "distractor" in p), "--top", "2", "--min-score", "0.999")
    assert "no good match: the best cosine, 0." in strict.stderr
    bad = run_imret("search", out, query, "--min-score", "1.5", check=False)
    _one_error_line(bad, "--min-score", "between 0 and 1")


def test_is_match_takes_verification_or_the_cosine():
    from imret import Hit
    from imret.index.cutoff import hit_fields, is_match, no_match_message

    plain = Hit(1, 0.74, 7, "/a.jpg")
    assert plain.cosine == 0.74 and not is_match(plain, 0.75) and is_match(plain, 0.74)
    checked = Hit(1, 0.6 + 0.002 * 30, 7, "/a.jpg", inliers=30, cosine=0.6, verified=True)
    assert is_match(checked, 0.75)
    f = hit_fields(checked, 0.75, matches=False)
    assert f == {"rank": 1, "score": 0.66, "cosine": 0.6, "match": True, "id": 7, "path": "/a.jpg",
                 "inliers": 30, "verified": True}
    low = Hit(2, 0.5, 8, "/b.jpg", inliers=4, cosine=0.5, verified=False)
    assert no_match_message([low], 0.75) == ("no good match: the best cosine, 0.500, is below the cut-off 0.75 "
                                            "and nothing was verified")
    assert no_match_message([low, checked], 0.75) is None


def test_a_reader_that_closes_stdout_ends_the_command_quietly():
    import subprocess

    from imret_cli import command

    proc = subprocess.Popen(command("presets"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # as `| head` does once it has read enough
    err = proc.stderr.read()
    assert proc.wait() == 141 and err == ""


def test_a_broken_pipe_that_is_not_stdout_is_an_error(monkeypatch, capsys):
    from imret import cli

    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "cmd_presets", broken)
    assert cli.main(["presets"]) == 1
    assert capsys.readouterr().err.strip() == "imret: error: Broken pipe"
