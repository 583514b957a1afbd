"""``probe.figures`` scores a head as ``imret eval`` does, re-ranking included."""
import numpy as np

from imret.training import probe


def test_figures_hands_whitening_and_re_ranking_to_the_evaluation(monkeypatch):
    db, q = np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32)[:1]
    seen = []
    monkeypatch.setattr(probe, "descriptors", lambda head, maps: (db, q))
    monkeypatch.setattr(probe, "evaluate_descriptors",
                        lambda ds, d, qq, white, rerank: seen.append((ds, d, qq, white, rerank)) or {"figures": rerank})
    maps = probe.DatasetMaps(dataset="DS", db=[], queries=[])
    assert probe.figures(None, maps, "W", "qe:n=2") == "qe:n=2"
    assert probe.figures(None, maps) is None
    assert seen[0][0] == "DS" and seen[0][1] is db and seen[0][2] is q
    assert [s[3:] for s in seen] == [("W", "qe:n=2"), (None, None)]
