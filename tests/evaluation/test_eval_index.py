"""``imret eval --index FILE`` scores the searches of that index, whatever its backend.

One extraction of paris6k-sub (the 'fast' preset) makes an exact and an IVF-PQ index
of the same rows. The exact index must score what a brute-force ranking of the same
descriptors scores (today's evaluation, written out here); the IVF-PQ index, searched
with one inverted list visited, what its own ``Index.search`` results score, which is
not the exact figure (so the backend is what is measured).
"""
import json
import os

import numpy as np
import pytest

from imret.descriptor.whitening import l2_normalize
from imret.evaluation.datasets import load_dataset
from imret.evaluation.evaluate import describe, rank_all, score
from imret.extractor import Extractor
from imret.index.store import Index
from imret.presets import get_preset

from imret_cli import run_imret

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "paris6k-sub")


def _maps(figures):
    return {split: round(v["mAP"], 2) for split, v in figures.items()}


def _ranks_of_searches(index, ds, q_raw):
    """Q×N database positions as ``index.search`` returns them, the unreturned ones after."""
    at = {os.path.abspath(p): i for i, p in enumerate(ds.db)}
    ranks = []
    for hits in index.search(q_raw, top=len(index)):
        found = [at[h.path] for h in hits]
        ranks.append(found + [i for i in range(len(ds.db)) if i not in set(found)])
    return np.array(ranks)


def _centred(q, db):
    mean = db.astype(np.float64).mean(0)
    return l2_normalize(q - mean), l2_normalize(db - mean)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    if not os.path.isdir(DATA):
        pytest.skip("../shared/data/paris6k-sub is not here")
    ds = load_dataset(DATA)
    preset = get_preset("fast")
    ex = Extractor(preset, device="cpu")
    db, q, failures = describe(ex, ds)
    # 125 images: too few for PCA-whitening, enough for centring: rows are L2(raw − database mean)
    assert not failures and preset.whitening.learned_from(len(ds.db)) == "center"
    root = tmp_path_factory.mktemp("evalindex")
    files = {}
    for kind in ("flat", "ivfpq"):
        p = preset.replace(index=preset.index.replace(kind=kind))
        idx = Index.from_raw(p, ex.dim, [os.path.abspath(x) for x in ds.db], db, [DATA])
        files[kind] = root / f"{kind}.index"
        idx.save(files[kind])
    return ds, db, q, files


def _eval(path, *extra):
    res = run_imret("eval", "--dataset", DATA, "--index", path, "--json", "-q", "--device", "cpu", *extra)
    return json.loads(res.stdout)


def test_eval_of_an_exact_index_equals_the_brute_force_ranking(indexed):
    ds, db, q, files = indexed
    today = score(ds, rank_all(*_centred(q, db)))
    res = _eval(files["flat"])
    assert res["backend"] == "flat" and res["indexed"] == len(ds.db) == 125
    for split in ("easy", "medium", "hard"):
        assert res["figures"][split]["mAP"] == pytest.approx(today[split]["mAP"], abs=0.01)


def test_eval_of_an_ivfpq_index_gives_that_backends_figures(indexed):
    ds, db, q, files = indexed
    index = Index.load(files["ivfpq"])
    index.tune(nprobe=1)  # one of its 3 lists: about a third of the database reaches the shortlist
    expected = score(ds, _ranks_of_searches(index, ds, q))
    exact = score(ds, rank_all(*_centred(q, db)))
    res = _eval(files["ivfpq"], "--nprobe", "1")
    assert res["backend"] == "ivfpq"
    assert _maps(res["figures"]) == pytest.approx(_maps(expected), abs=0.01)
    got, ref = _maps(res["figures"]), _maps(exact)
    assert any(abs(got[k] - ref[k]) > 0.1 for k in ref), (got, ref)  # the approximation shows
