"""Each re-ranking step raises mAP on real photographs: the multi-view set built on the
embedded photo set (close-up queries, several views of each original in the database;
see imret.rerank.multiview for why not the embedded set itself). Descriptors are
extracted once for the module and every step runs on them."""
import numpy as np
import pytest

from imret.evaluation.datasets import load_dataset
from imret.evaluation.evaluate import evaluate_descriptors
from imret.extractor import Extractor
from imret.rerank.multiview import make_multiview_set


@pytest.fixture(scope="module")
def multiview(photoset, tmp_path_factory):
    # 30 of the 60 distractors keep the extraction (150 images) near 25 s on 2 cores
    mv = make_multiview_set(str(tmp_path_factory.mktemp("multiview")), base=photoset, distractors=30)
    ds = load_dataset(mv.root)
    ex = Extractor.from_preset("fast")
    res = ex.extract_paths(ds.db + ds.queries)
    assert not res.failures
    desc = dict(zip(res.paths, res.descriptors))
    db = np.stack([desc[p] for p in ds.db])
    q = np.stack([desc[p] for p in ds.queries])
    base = evaluate_descriptors(ds, db, q)["figures"]
    return ds, db, q, base


def test_the_set_has_several_positives_per_query_and_room_to_improve(multiview):
    ds, _, _, base = multiview
    assert len(ds.queries) >= 36 and min(len(g["ok"]) for g in ds.gnd) == 4
    # measured 92.1 mAP, 97.5% rank-1 (fast preset, 2 CPU cores)
    assert 80.0 <= base["mAP"] <= 96.0 and base["R@1"] >= 85.0


# Measured gains in mAP points on this set: qe +3.4, aqe +3.5, dba +4.4, gfr +5.3,
# kreciprocal +6.3, dba,aqe +5.8, aqe,kreciprocal +6.1; rank-1 unchanged but for dba
# (one query of 40 loses its first place).
@pytest.mark.parametrize("spec", ["qe", "aqe", "dba", "gfr", "kreciprocal", "dba,aqe", "aqe,kreciprocal"])
def test_each_step_raises_map(multiview, spec):
    ds, db, q, base = multiview
    after = evaluate_descriptors(ds, db, q, None, spec)["figures"]
    assert after["mAP"] >= base["mAP"] + 2.0, (spec, base, after)
    assert after["R@1"] >= base["R@1"] - 2.5, (spec, base, after)
