"""imret demo's report: per-alteration counts, failures beside successes, the next commands."""
import os

from imret.evaluation.demo import Outcome, alteration_of, alteration_table, report_lines, run_demo
from imret.evaluation.photoset import PhotoSet


def _o(name, kind, found, first="db/x.png", cosine=0.5):
    return Outcome(f"/d/queries/{name}__{kind}.jpg", kind, found, f"/d/{first}", cosine)


def test_alteration_of_reads_the_query_name():
    assert alteration_of("/x/queries/hubble_deep_field__occlude.jpg") == "occlude"


def test_table_counts_found_over_total_per_alteration_in_order():
    outcomes = [_o("a", "paste", False), _o("a", "crop", True), _o("b", "crop", True), _o("b", "paste", True),
                _o("m", "viewpoint", False)]
    assert alteration_table(outcomes) == ["alteration  found / total",
                                          "crop            2 / 2",
                                          "paste           1 / 2",
                                          "viewpoint       0 / 1",
                                          "all             3 / 5"]


def test_report_lists_failures_with_what_came_first_and_the_next_commands():
    outcomes = [_o("a", "crop", True, "db/a.png", 0.91), _o("b", "paste", False, "db/c.png", 0.62)]
    lines = report_lines(outcomes, "/d", "/d/demo.index")
    text = "\n".join(lines)
    assert "not found (1), with what came first instead:\n  queries/b__paste.jpg → db/c.png (cosine 0.620)" in text
    assert "found, one per alteration:\n  queries/a__crop.jpg → db/a.png (cosine 0.910)" in text
    nxt = lines[lines.index("next:") + 1:]
    assert [line.split()[:2] for line in nxt] == [["imret", "search"], ["imret", "serve"], ["imret", "eval"]]
    assert nxt[0].split()[2:4] == ["/d/demo.index", "/d/queries/b__paste.jpg"]  # a failure, to look at
    assert nxt[2].split()[2:4] == ["--dataset", "/d"]


def test_run_demo_searches_every_query(photoset):
    from imret.index.store import Index
    from imret.presets import get_preset

    names = ("coffee", "astronaut", "chelsea")
    db = [p for p in photoset.db if os.path.basename(p).split(".")[0] in names]
    queries = [q for q in photoset.queries if os.path.basename(q).split("__")[0] in names
               and ("__crop" in q or "__jpeg" in q)]
    small = PhotoSet(photoset.root, db, queries, {q: photoset.positives[q] for q in queries})
    index, _ = Index.build(db, get_preset("fast"))
    outcomes = run_demo(index, small)
    assert [o.query for o in outcomes] == queries and len(outcomes) == 6
    assert all(o.found for o in outcomes)  # three photos, crops and JPEG copies of them: all found
    assert all(0 < o.cosine <= 1.0001 and os.path.basename(o.first).split(".")[0] in o.query for o in outcomes)
