"""Re-ranking bundled with a preset (``Preset.rerank``): validated and spelt out once, run
by every search unless it is told otherwise, its database side stored at index time."""
import json

import numpy as np
import pytest

from imret.config import ConfigError, IndexConfig, Preset, WhiteningConfig
from imret.index.indexer import Indexer
from imret.index.store import Index
from imret.presets import get_preset, list_presets
from imret.rerank import DBA, GlobalFeatureRerank, Pipeline, resolve

from imret_cli import run_imret

# q = (0, 1): A = (0.6, 0.8) is its nearest (0.8), then C = (-0.7071, 0.7071) (0.7071), then
# B = (0.8, 0.6) (0.6). Query expansion by the first result, q' = (q + A) / |q + A| =
# (0.3162, 0.9487), ranks B (0.8222) above C (0.4472): A's neighbour comes up.
ROWS = np.array([[0.6, 0.8], [0.8, 0.6], [-0.7071068, 0.7071068]], np.float32)
PATHS = ["/p/A.jpg", "/p/B.jpg", "/p/C.jpg"]
Q = np.array([[0.0, 1.0]], np.float32)


def _index(rerank: str) -> Index:
    idx = Index(Preset(index=IndexConfig(kind="flat"), whitening=WhiteningConfig(kind="none"), rerank=rerank), 2)
    idx.add_descriptors(PATHS, ROWS)
    return idx


def _ranked(hits):
    return [(h.path[-5], round(h.score, 4)) for h in hits]


def test_a_search_runs_the_presets_steps_unless_told_none_or_others():
    idx = _index("qe:n=1")
    hits = idx.search(Q, top=3)[0]
    assert _ranked(hits) == [("A", 0.9487), ("B", 0.8222), ("C", 0.4472)]
    # a match is still called on the query's own cosine, not on its expansion's score
    assert [round(h.cosine, 4) for h in hits] == [0.8, 0.6, 0.7071]
    assert _ranked(idx.search(Q, top=3, rerank="preset")[0]) == _ranked(idx.search(Q, top=3, rerank="qe:n=1")[0])
    plain = [("A", 0.8), ("C", 0.7071), ("B", 0.6)]
    assert _ranked(idx.search(Q, top=3, rerank=None)[0]) == plain
    assert _ranked(idx.search(Q, top=3, rerank="none")[0]) == plain
    assert _ranked(_index("").search(Q, top=3)[0]) == plain  # most presets bundle nothing


def test_resolve_reads_preset_none_and_specs():
    assert resolve("preset", "qe:n=1") == Pipeline.parse("qe:n=1")
    assert resolve("preset", "") is None
    assert resolve(None, "qe:n=1") is None and resolve("none", "qe:n=1") is None and resolve(" None ", "gfr") is None
    assert resolve("aqe", "qe") == Pipeline.parse("aqe")
    given = Pipeline.parse("gfr:k=3")
    assert resolve(given, "qe") is given


def test_the_spec_is_validated_and_spelt_out_once_and_round_trips():
    p = Preset(rerank=" DBA:k=3 ,qe")
    assert p.rerank == "dba:k=3,alpha=3,qe:n=2,shortlist=100,scope=database"
    assert Preset.from_dict(p.to_dict()) == p and Preset(rerank=p.rerank) == p
    older = {k: v for k, v in Preset().to_dict().items() if k != "rerank"}  # an index written before the field
    assert Preset.from_dict(older).rerank == ""
    assert Preset(rerank="  ").rerank == ""


@pytest.mark.parametrize("bad, message", [
    ("qe,dba", "dba changes the database before the search, so it must come first"),
    ("dba,dba", "at most one database step"),
    ("gfr:k=0", "gfr: k must be an integer ≥ 1, got 0"),
    ("nope", "unknown re-ranking step 'nope'"),
    (["qe"], "rerank is a re-ranking spec such as 'gfr' or 'dba,aqe' ('' for none), got ['qe']"),
])
def test_a_bad_spec_is_refused_with_its_reason(bad, message):
    with pytest.raises(ConfigError) as err:
        Preset(rerank=bad)
    assert message in str(err.value)


def test_the_papers_that_re_rank_bring_their_steps_and_no_other_preset_has_any():
    bundled = {p.name: p.rerank for p in list_presets() if p.rerank}
    assert bundled == {"lite0-regional": Pipeline.parse("qe").__str__(),  # Kim & Yoon: query expansion
                       "lite0-selfsim": Pipeline.parse("gfr").__str__()}  # Chen & Yao: global re-ranking


def test_the_indexer_stores_the_database_side_of_the_presets_steps():
    ind = Indexer(Preset(rerank="dba:k=3,gfr:k=4"))
    assert ind.dba == DBA(k=3) and ind.gfr == GlobalFeatureRerank(k=4)
    assert Indexer(Preset(rerank="gfr:scope=shortlist")).gfr is None  # reads no whole-index neighbours
    assert Indexer(Preset(rerank="dba:k=3"), dba=DBA(k=5)).dba == DBA(k=5)  # --dba wins
    plain = Indexer(get_preset("default"))
    assert plain.dba is None and plain.gfr is None


def test_cli_search_info_and_none(photoset, copy_photos, tmp_path):
    photos = copy_photos([p for p in photoset.db if "distractor" not in p][:3], tmp_path / "photos")
    out = tmp_path / "t.index"
    run_imret("index", photos, "--out", out, "--preset", "fast", "-q")
    idx = Index.load(out)
    idx.preset = idx.preset.replace(rerank="qe:n=1")  # as a preset bundling it would be stored
    idx.save(out)
    query = sorted(photos.iterdir())[0]
    res = json.loads(run_imret("search", out, query, "--json", "--top", "3").stdout)
    assert res["rerank"] == "qe:n=1,shortlist=100,scope=database"
    assert json.loads(run_imret("search", out, query, "--json", "--rerank", "none").stdout)["rerank"] is None
    assert json.loads(run_imret("search", out, query, "--json", "--rerank", "aqe").stdout)["rerank"].startswith("aqe:")
    assert "re-ranking  qe:n=1,shortlist=100,scope=database (the preset's" in run_imret("info", out).stdout
