"""imret eval: a dataset it cannot read fails plainly; per-query AP; no photo extracted twice."""
import json
import os
import shutil

import pytest

from imret_cli import run_imret


def test_a_dataset_whose_photos_are_all_missing_is_one_clear_error(tmp_path):
    (tmp_path / "ground_truth.json").write_text(json.dumps(
        {"db": ["db/a.png", "db/b.png"], "queries": ["queries/a__crop.jpg"], "positives": {"queries/a__crop.jpg": ["db/a.png"]}}))
    proc = run_imret("eval", "--dataset", tmp_path, "--preset", "fast", "-q", check=False)
    assert proc.returncode == 1 and proc.stdout == "" and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "none of the 2 database photos could be read" in errors[0], proc.stderr
    assert "nan" not in proc.stderr.lower()


def test_an_unknown_layout_lists_the_layouts(tmp_path):
    (tmp_path / "notes.txt").write_text("no photos")
    proc = run_imret("eval", "--dataset", tmp_path, check=False)
    assert proc.returncode == 1
    assert "pass --layout with one of classic, holidays, instances, photoset, places, revisitop, ukbench" in proc.stderr


@pytest.fixture(scope="module")
def instances(photoset, tmp_path_factory):
    root = tmp_path_factory.mktemp("instances")
    for name in ("coffee", "astronaut"):
        (root / name).mkdir()
        shutil.copy(os.path.join(photoset.root, "db", f"{name}.png"), root / name)
        for kind in ("crop", "jpeg"):
            shutil.copy(os.path.join(photoset.root, "queries", f"{name}__{kind}.jpg"), root / name)
    return root


def test_instances_extracts_each_photo_once_and_gives_per_query_ap(instances):
    from imret.evaluation.datasets import load_dataset
    from imret.evaluation.evaluate import evaluate
    from imret.extractor import Extractor
    from imret.presets import get_preset

    calls = []

    class Counting(Extractor):
        def prepare(self, img):  # every photo's backbone inputs are made here, once
            calls.append(img.shape)
            return super().prepare(img)

    ds = load_dataset(str(instances))
    res = evaluate(Counting(get_preset("fast"), device="cpu"), ds)
    assert len(calls) == len(ds.db) == 6  # the queries are the database photos: not extracted again
    per = res["per_query"]
    assert [p["query"] for p in per] == ds.queries
    # each query has two positives among five others; the mean of the APs is the mAP
    assert all(0 < p["ap"] <= 100 for p in per)
    assert abs(sum(p["ap"] for p in per) / len(per) - res["figures"]["mAP"]) < 1e-3


def test_eval_says_when_whitening_was_skipped_and_the_head_is_untrained(instances):
    proc = run_imret("eval", "--dataset", instances, "--preset", "lite0-dagf", "-q", "--json")
    assert "note: whitening skipped: learned from 500 database images on, this dataset has 6" in proc.stderr
    from imret.cli_output import head_is_untrained
    from imret.extractor import Extractor
    from imret.presets import get_preset

    # said exactly when the preset's head still has its starting weights (shipped weights count as trained)
    ex = Extractor(get_preset("lite0-dagf"), device="cpu")
    untrained = head_is_untrained(ex.head, ex.preset.head, ex.backbone.out_channels)
    assert ("note: head 'dagf' of preset 'lite0-dagf' is untrained" in proc.stderr) == untrained
    assert len(json.loads(proc.stdout)["per_query"]) == 6
