"""Tests of imret.evaluation.datasets: each test writes a tiny dataset in the
standard layout into tmp_path and checks the loaded Dataset."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from PIL import Image

from imret.errors import DatasetError
from imret.evaluation.datasets import (
    Dataset,
    detect_layout,
    load_classic,
    load_dataset,
    load_holidays,
    load_instances,
    load_places,
    load_revisitop,
    load_ukbench,
    read_gnd_pickle,
)
from imret.evaluation.evaluate import score


def _img(path, color=(200, 30, 30), size=(8, 6)):
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[...] = color
    Image.fromarray(arr).save(path)  # format from the extension (JPEG / PNG)
    return path


def _ids(x):
    return [int(v) for v in np.asarray(x).ravel()]


# --------------------------------------------------------------------------- revisitop
REV_IMLIST = ["all_souls_000000", "all_souls_000001", "radcliffe_000002", "magdalen_000003"]
REV_QIMLIST = ["all_souls_000013", "radcliffe_camera_000519"]


def _write_revisitop(root, as_arrays=False, protocol=pickle.DEFAULT_PROTOCOL, name="roxford5k"):
    conv = (lambda x, dt=np.int64: np.asarray(x, dtype=dt)) if as_arrays else (lambda x, dt=None: list(x))
    gnd = [
        {"bbx": conv([136.5, 34.1, 648.5, 955.7], np.float64), "easy": conv([0, 1]), "hard": conv([3]),
         "junk": conv([2])},
        {"bbx": conv([1.0, 2.0, 30.0, 40.0], np.float64), "easy": conv([2]), "hard": conv([]),
         "junk": conv([])},
    ]
    cfg = {"imlist": REV_IMLIST, "qimlist": REV_QIMLIST, "gnd": gnd}
    with open(os.path.join(root, f"gnd_{name}.pkl"), "wb") as f:
        pickle.dump(cfg, f, protocol=protocol)
    for n in REV_IMLIST + REV_QIMLIST:
        _img(os.path.join(root, "jpg", n + ".jpg"))
    return cfg


@pytest.mark.parametrize("as_arrays", [False, True], ids=["lists", "arrays"])
@pytest.mark.parametrize("protocol", sorted({2, 4, pickle.HIGHEST_PROTOCOL}))
def test_revisitop_loads(tmp_path, as_arrays, protocol):
    root = str(tmp_path)
    _write_revisitop(root, as_arrays, protocol)
    ds = load_revisitop(root)
    assert isinstance(ds, Dataset)
    assert ds.name == "roxford5k"
    assert ds.protocol == "revisited"
    jpg = os.path.join(root, "jpg")
    assert ds.db == [os.path.join(jpg, n + ".jpg") for n in REV_IMLIST]
    assert ds.queries == [os.path.join(jpg, n + ".jpg") for n in REV_QIMLIST]
    assert all(os.path.isfile(p) for p in ds.db + ds.queries)
    assert ds.bboxes == [(136.5, 34.1, 648.5, 955.7), (1.0, 2.0, 30.0, 40.0)]
    assert all(isinstance(v, float) for v in ds.bboxes[0])
    assert _ids(ds.gnd[0]["easy"]) == [0, 1]
    assert _ids(ds.gnd[0]["hard"]) == [3]
    assert _ids(ds.gnd[0]["junk"]) == [2]
    assert _ids(ds.gnd[1]["easy"]) == [2]
    assert _ids(ds.gnd[1]["hard"]) == [] and _ids(ds.gnd[1]["junk"]) == []
    for g in ds.gnd:
        for k in ("easy", "hard", "junk"):
            assert isinstance(g[k], np.ndarray) and g[k].dtype == np.int64
    assert ds.query_db_index == [None, None]
    # through the generic entry point too
    assert detect_layout(root) == "revisitop"
    assert load_dataset(root).name == "roxford5k"


def test_revisitop_picks_named_file_and_missing_bbx(tmp_path):
    root = str(tmp_path)
    _write_revisitop(root, name="roxford5k")
    cfg = {"imlist": ["p1", "p2"], "qimlist": ["p1"], "gnd": [{"easy": [1], "hard": [], "junk": [0]}]}
    with open(tmp_path / "gnd_rparis6k.pkl", "wb") as f:
        pickle.dump(cfg, f)
    ds = load_revisitop(root, name="rparis6k")
    assert ds.name == "rparis6k"
    assert ds.db == [os.path.join(root, "jpg", "p1.jpg"), os.path.join(root, "jpg", "p2.jpg")]
    assert ds.bboxes == [None]
    with pytest.raises(DatasetError):
        load_revisitop(root, name="rholidays")


def test_revisitop_inconsistent_counts(tmp_path):
    cfg = {"imlist": ["a"], "qimlist": ["a", "b"], "gnd": [{"easy": [0], "hard": [], "junk": []}]}
    path = tmp_path / "gnd_x.pkl"
    with open(path, "wb") as f:
        pickle.dump(cfg, f)
    with pytest.raises(DatasetError) as exc:
        load_revisitop(str(tmp_path))
    assert exc.value.path == str(path)


def test_revisitop_missing_key(tmp_path):
    with open(tmp_path / "gnd_x.pkl", "wb") as f:
        pickle.dump({"imlist": []}, f)
    with pytest.raises(DatasetError, match="qimlist|gnd"):
        load_revisitop(str(tmp_path))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilEval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w').close()",))


@pytest.mark.parametrize("evil", [_Evil, _EvilEval])
def test_revisitop_malicious_pickle_is_refused(tmp_path, evil):
    root = tmp_path / "ds"
    root.mkdir()
    marker = tmp_path / "pwned"
    cfg = {"imlist": ["a"], "qimlist": ["a"], "gnd": [{"easy": [0], "hard": [], "junk": [], "x": evil(str(marker))}]}
    path = root / "gnd_roxford5k.pkl"
    path.write_bytes(pickle.dumps(cfg))
    with pytest.raises(DatasetError) as exc:
        load_revisitop(str(root))
    assert exc.value.path == str(path)
    assert not marker.exists()
    with pytest.raises(DatasetError):
        read_gnd_pickle(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("protocol", sorted({0, 2, 4, pickle.HIGHEST_PROTOCOL}))
def test_gnd_pickle_plain_data_every_protocol(tmp_path, protocol):
    data = {"s": {1, 2}, "f": frozenset({3}), "b": b"\x00\xffab", "e": b"",
            "a": np.arange(6, dtype=np.int32).reshape(2, 3), "x": np.float64(2.5), "t": (1, "two")}
    path = tmp_path / "gnd_x.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    out = read_gnd_pickle(str(path))
    assert out["s"] == {1, 2} and out["f"] == frozenset({3})
    assert out["b"] == b"\x00\xffab" and out["e"] == b""
    assert out["a"].dtype == np.int32 and out["a"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert out["x"] == 2.5 and out["t"] == (1, "two")


class _Rot13:
    def __reduce__(self):
        import codecs
        return (codecs.encode, ("payload", "rot13"))


def test_gnd_pickle_codecs_encode_only_latin1(tmp_path):
    path = tmp_path / "gnd_x.pkl"
    path.write_bytes(pickle.dumps({"x": _Rot13()}, protocol=2))
    with pytest.raises(DatasetError, match="rot13"):
        read_gnd_pickle(str(path))


def test_gnd_pickle_garbage_and_missing(tmp_path):
    bad = tmp_path / "gnd_bad.pkl"
    bad.write_bytes(b"not a pickle at all")
    with pytest.raises(DatasetError):
        read_gnd_pickle(str(bad))
    with pytest.raises(DatasetError):
        read_gnd_pickle(str(tmp_path / "nope.pkl"))


# --------------------------------------------------------------------------- classic Oxford/Paris
def _write_classic(root):
    jpg = os.path.join(root, "jpg")
    names = ["all_souls_000013", "all_souls_000026", "all_souls_000040", "ashmolean_000000",
             "balliol_000051", "christ_church_000179"]
    for n in names:
        _img(os.path.join(jpg, n + ".jpg"))
    gt = os.path.join(root, "gt")
    os.makedirs(gt)

    def w(fname, text):
        with open(os.path.join(gt, fname), "w") as f:
            f.write(text)

    w("all_souls_1_query.txt", "oxc1_all_souls_000013 136.5 34.1 648.5 955.7\n")
    w("all_souls_1_good.txt", "all_souls_000013\nall_souls_000026\n")
    w("all_souls_1_ok.txt", "all_souls_000040\nnot_in_db_000001\n")
    w("all_souls_1_junk.txt", "balliol_000051\n")
    w("ashmolean_1_query.txt", "oxc1_ashmolean_000000 10 20 30.5 40\n")
    w("ashmolean_1_good.txt", "")
    w("ashmolean_1_ok.txt", "christ_church_000179\n")
    w("ashmolean_1_junk.txt", "")
    return sorted(names)


def test_classic_oxford(tmp_path):
    root = str(tmp_path / "oxford5k")
    db_names = _write_classic(root)
    ds = load_classic(root)
    jpg = os.path.join(root, "jpg")
    assert ds.name == "oxford5k"
    assert ds.protocol == "classic"
    assert ds.db == [os.path.join(jpg, n + ".jpg") for n in db_names]
    idx = {n: i for i, n in enumerate(db_names)}
    # queries in sorted order of their gt files: all_souls_1 then ashmolean_1; prefix stripped
    assert ds.queries == [os.path.join(jpg, "all_souls_000013.jpg"), os.path.join(jpg, "ashmolean_000000.jpg")]
    assert ds.bboxes == [(136.5, 34.1, 648.5, 955.7), (10.0, 20.0, 30.5, 40.0)]
    assert sorted(ds.gnd[0]["ok"]) == sorted([idx["all_souls_000013"], idx["all_souls_000026"],
                                              idx["all_souls_000040"]])
    assert ds.gnd[0]["junk"] == [idx["balliol_000051"]]
    assert ds.gnd[1]["ok"] == [idx["christ_church_000179"]]
    assert ds.gnd[1]["junk"] == []
    assert detect_layout(root) == "classic"
    assert load_dataset(root).queries == ds.queries


def test_classic_missing_list_names_file(tmp_path):
    root = str(tmp_path)
    _write_classic(root)
    os.remove(os.path.join(root, "gt", "ashmolean_1_junk.txt"))
    with pytest.raises(DatasetError) as exc:
        load_classic(root)
    assert exc.value.path == os.path.join(root, "gt", "ashmolean_1_junk.txt")


def test_classic_bad_query_line(tmp_path):
    root = str(tmp_path)
    _write_classic(root)
    qf = os.path.join(root, "gt", "all_souls_1_query.txt")
    with open(qf, "w") as f:
        f.write("oxc1_all_souls_000013 1 2 3\n")
    with pytest.raises(DatasetError) as exc:
        load_classic(root)
    assert exc.value.path == qf


def test_classic_missing_jpg_folder(tmp_path):
    root = str(tmp_path)
    _write_classic(root)
    for f in os.listdir(os.path.join(root, "jpg")):
        os.remove(os.path.join(root, "jpg", f))
    os.rmdir(os.path.join(root, "jpg"))
    with pytest.raises(DatasetError) as exc:
        load_dataset(root)
    assert exc.value.path.startswith(root)


# --------------------------------------------------------------------------- Holidays
HOLIDAYS = ["100000", "100001", "100002", "100100", "100101", "100200"]


def _write_holidays(root):
    for n in HOLIDAYS:
        _img(os.path.join(root, "jpg", n + ".jpg"))
    return [os.path.join(root, "jpg", n + ".jpg") for n in HOLIDAYS]


def test_holidays(tmp_path):
    root = str(tmp_path)
    paths = _write_holidays(root)
    ds = load_holidays(root)
    assert ds.name == "holidays" and ds.protocol == "holidays"
    assert ds.db == paths
    assert ds.queries == [paths[0], paths[3], paths[5]]
    assert ds.query_db_index == [0, 3, 5]
    assert [_ids(g["ok"]) for g in ds.gnd] == [[1, 2], [4], []]
    assert [_ids(g["junk"]) for g in ds.gnd] == [[0], [3], [5]]  # the query itself
    assert ds.bboxes == [None, None, None]
    assert detect_layout(root) == "holidays"


def test_holidays_score_end_to_end(tmp_path):
    root = str(tmp_path)
    _write_holidays(root)
    ds = load_dataset(root)
    assert ds.protocol == "holidays"
    ranks = np.array([
        [0, 3, 1, 4, 2, 5],  # itself first; positives 1, 2 at ranks 2, 4 -> 1, 3 without the query
        [3, 4, 0, 1, 2, 5],  # itself first; positive 4 at rank 1 -> 0
        [5, 0, 1, 2, 3, 4],  # no positive: left out
    ])
    out = score(ds, ranks)
    ap0 = ((0 / 1 + 1 / 2) / 2 + (1 / 3 + 2 / 4) / 2) / 2  # = 1/3
    assert out["mAP"] == pytest.approx(100 * (ap0 + 1.0) / 2)
    assert out["mAP"] == pytest.approx(200 / 3)
    # rank-1 with the query removed: q0 -> 3 (miss), q1 -> 4 (hit), q2 skipped
    assert out["R@1"] == pytest.approx(50.0)


# --------------------------------------------------------------------------- UKBench
def test_ukbench(tmp_path):
    root = str(tmp_path)
    names = [f"ukbench{i:05d}.jpg" for i in range(8)]
    for n in names:
        _img(os.path.join(root, "full", n))
    ds = load_ukbench(root)
    assert ds.name == "ukbench" and ds.protocol == "ukbench"
    assert ds.db == [os.path.join(root, "full", n) for n in names]
    assert ds.queries == ds.db
    assert list(ds.groups) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert _ids(ds.gnd[5]["ok"]) == [4, 5, 6, 7]
    assert _ids(ds.gnd[0]["ok"]) == [0, 1, 2, 3]
    assert ds.query_db_index == list(range(8))
    assert detect_layout(root) == "ukbench"
    perfect = np.array([[j for j in range(8) if j // 4 == i // 4] + [j for j in range(8) if j // 4 != i // 4]
                        for i in range(8)])
    assert score(ds, perfect) == {"N-S": pytest.approx(4.0)}
    reversed_ = perfect[:, ::-1]
    assert score(ds, reversed_)["N-S"] == pytest.approx(0.0)


# --------------------------------------------------------------------------- instances
def test_instances(tmp_path):
    root = str(tmp_path)
    a1 = _img(os.path.join(root, "alpha", "1.png"))
    a2 = _img(os.path.join(root, "alpha", "2.jpg"))
    b1 = _img(os.path.join(root, "beta", "x.png"))
    with open(os.path.join(root, "alpha", "notes.txt"), "w") as f:
        f.write("not an image")
    ds = load_instances(root)
    assert ds.protocol == "instances"
    assert ds.name == os.path.basename(root)
    assert ds.db == [a1, a2, b1]
    assert ds.queries == ds.db
    assert list(ds.groups) == [0, 0, 1]
    assert [_ids(g["ok"]) for g in ds.gnd] == [[1], [0], []]
    assert [_ids(g["junk"]) for g in ds.gnd] == [[0], [1], [2]]
    assert detect_layout(root) == "instances"


def test_instances_empty_raises(tmp_path):
    (tmp_path / "empty_instance").mkdir()
    with pytest.raises(DatasetError) as exc:
        load_instances(str(tmp_path))
    assert exc.value.path == str(tmp_path)


# --------------------------------------------------------------------------- places
def _write_places(root):
    os.makedirs(root, exist_ok=True)
    db = [("db/a.jpg", 0, 0), ("db/b.jpg", 10, 0), ("db/c.jpg", 30, 0), ("db/d.jpg", 0, 25)]
    qs = [("q/q1.jpg", 0, 0), ("q/q2.jpg", 100, 100), ("q/q3.jpg", 20, 0)]
    for rows, fname in ((db, "db.csv"), (qs, "queries.csv")):
        with open(os.path.join(root, fname), "w") as f:
            f.write("path,east,north\n")
            for p, e, n in rows:
                f.write(f"{p},{e},{n}\n")
                _img(os.path.join(root, p))


def test_places(tmp_path):
    root = str(tmp_path / "pitts")
    _write_places(root)
    ds = load_places(root)
    assert ds.protocol == "places" and ds.name == "pitts"
    assert ds.db == [os.path.join(root, "db", n) for n in ("a.jpg", "b.jpg", "c.jpg", "d.jpg")]
    assert ds.queries == [os.path.join(root, "q", n) for n in ("q1.jpg", "q2.jpg", "q3.jpg")]
    # 25 m threshold, inclusive: (0,25) is a positive of (0,0); (30,0) is not
    assert [_ids(g["ok"]) for g in ds.gnd] == [[0, 1, 3], [], [0, 1, 2]]
    assert detect_layout(root) == "places"
    tight = load_places(root, threshold_m=10.0)
    assert [_ids(g["ok"]) for g in tight.gnd] == [[0, 1], [], [1, 2]]
    ranks = np.array([[2, 3, 0, 1], [0, 1, 2, 3], [3, 0, 1, 2]])
    out = score(ds, ranks)
    # q1: first positive (3) at rank 1; q2 skipped; q3: first positive (0) at rank 1
    assert out == pytest.approx({"R@1": 0.0, "R@5": 100.0, "R@10": 100.0})


def test_places_bad_csv_names_file(tmp_path):
    root = str(tmp_path)
    _write_places(root)
    with open(os.path.join(root, "queries.csv"), "w") as f:
        f.write("path,x,y\nq/q1.jpg,0,0\n")
    with pytest.raises(DatasetError) as exc:
        load_places(root)
    assert exc.value.path == os.path.join(root, "queries.csv")


# --------------------------------------------------------------------------- revisited end to end
def test_revisited_score_end_to_end(tmp_path):
    root = str(tmp_path)
    _write_revisitop(root)
    ds = load_dataset(root)
    ranks = np.array([[0, 1, 3, 2], [2, 0, 1, 3]])
    out = score(ds, ranks)
    # q0 easy {0,1} at ranks 0,1 -> 1; hard {3} at rank 2, easy 0,1 junked -> rank 0 -> 1
    # medium {0,1,3} at ranks 0,1,2 -> 1; q1 easy {2} at rank 0 -> 1; no hard: left out
    for s in ("easy", "medium", "hard"):
        assert out[s]["mAP"] == pytest.approx(100.0)
    worse = np.array([[3, 2, 0, 1], [0, 1, 3, 2]])
    out2 = score(ds, worse)
    # easy q0: 0,1 at ranks 2,3, junk 3(hard),2 before -> ranks 0,1 -> 1; q1: 2 at rank 3 -> 1/8
    assert out2["easy"]["mAP"] == pytest.approx(100 * (1 + 1 / 8) / 2)
    # hard q0: 3 at rank 0 -> 1
    assert out2["hard"]["mAP"] == pytest.approx(100.0)


# --------------------------------------------------------------------------- layout detection and errors
def test_detect_layout_each(tmp_path):
    layouts = {
        "revisitop": lambda r: _write_revisitop(r),
        "classic": _write_classic,
        "holidays": _write_holidays,
        "ukbench": lambda r: _img(os.path.join(r, "full", "ukbench00000.jpg")),
        "instances": lambda r: _img(os.path.join(r, "cat", "a.jpg")),
        "places": _write_places,
    }
    for name, make in layouts.items():
        root = str(tmp_path / name)
        os.makedirs(root)
        make(root)
        assert detect_layout(root) == name, name
        assert load_dataset(root).protocol == {"revisitop": "revisited"}.get(name, name)


def test_ukbench_in_jpg_folder(tmp_path):
    root = str(tmp_path)
    for i in range(4):
        _img(os.path.join(root, "jpg", f"ukbench{i:05d}.jpg"))
    assert detect_layout(root) == "ukbench"
    ds = load_dataset(root)
    assert ds.db[0] == os.path.join(root, "jpg", "ukbench00000.jpg")


def test_missing_folder_raises_naming_path(tmp_path):
    missing = str(tmp_path / "does_not_exist")
    with pytest.raises(DatasetError) as exc:
        load_dataset(missing)
    assert exc.value.path == missing
    assert missing in str(exc.value)


def test_unknown_layout_raises_naming_path(tmp_path):
    _write_holidays(str(tmp_path))
    with pytest.raises(DatasetError) as exc:
        load_dataset(str(tmp_path), layout="bogus")
    assert exc.value.path == str(tmp_path)
    assert "bogus" in str(exc.value)


def test_undetectable_layout_raises(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(DatasetError) as exc:
        detect_layout(str(tmp_path))
    assert exc.value.path == str(tmp_path)
    with pytest.raises(DatasetError):
        load_dataset(str(tmp_path))


def test_wrong_explicit_layout_raises_dataset_error(tmp_path):
    _write_holidays(str(tmp_path))
    for layout in ("revisitop", "classic", "ukbench"):
        with pytest.raises(DatasetError):
            load_dataset(str(tmp_path), layout=layout)
