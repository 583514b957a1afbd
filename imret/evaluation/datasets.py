"""Loaders for the standard evaluation layouts. Each returns a ``Dataset``.

- revisitop (revisited Oxford/Paris): ``DIR/gnd_<name>.pkl`` + ``DIR/jpg/<image>.jpg``
- classic Oxford/Paris: ``DIR/gt/<query>_{query,good,ok,junk}.txt`` + ``DIR/jpg/``
- INRIA Holidays: ``DIR/jpg/NNNNNN.jpg``; an image whose number ends in 00 is a query,
  number // 100 its group
- UKBench: ``DIR/full/ukbenchNNNNN.jpg`` (or ``DIR/jpg/``); groups of 4 consecutive
- instances: ``DIR/<instance>/<images>``; every image queries the rest
- places: ``DIR/db.csv`` and ``DIR/queries.csv`` with columns path,east,north
  (metres, e.g. UTM); positives lie within a distance threshold
"""
from __future__ import annotations

import codecs
import csv
import glob
import io
import os
import pickle
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.errors import DatasetError
from ..io.images import IMAGE_EXTENSIONS


@dataclass
class Dataset:
    """``gnd[q]`` holds index lists into ``db`` ('easy'/'hard'/'junk' for the revisited
    protocol; 'ok'/'junk' otherwise). ``bboxes[q]`` crops query q (x0, y0, x1, y1) or is None."""

    name: str
    protocol: str
    db: list[str]
    queries: list[str]
    gnd: list[dict[str, Any]]
    bboxes: list[tuple[float, float, float, float] | None] = field(default_factory=list)
    groups: np.ndarray | None = None  # UKBench: group of each db image
    query_db_index: list[int | None] = field(default_factory=list)  # where a query is also in db

    def __post_init__(self):
        if not self.bboxes:
            self.bboxes = [None] * len(self.queries)
        if not self.query_db_index:
            self.query_db_index = [None] * len(self.queries)


class _GndUnpickler(pickle.Unpickler):
    """Reads revisitop's ground-truth pickles, which hold only dicts, lists, numbers,
    strings and numpy arrays; anything else (code) is refused."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("builtins", "set"), ("builtins", "frozenset"),
                ("builtins", "bytes"),
                # protocol <= 2 (and Python 2) pickles name builtins by their Python 2 module
                ("__builtin__", "set"), ("__builtin__", "frozenset"), ("__builtin__", "bytes"),
                # arrays pickled with protocol 5 (pickle.HIGHEST_PROTOCOL)
                ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module, name):
        if (module, name) == ("_codecs", "encode"):
            # Python 3 writes bytes (e.g. array data) as _codecs.encode(text, 'latin1') at protocol <= 2
            return _latin1_encode
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a ground-truth file")


def _latin1_encode(obj, encoding="utf-8", errors="strict"):
    if str(encoding).lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"refusing to encode with {encoding!r} in a ground-truth file")
    return codecs.encode(obj, "latin1", errors)


def read_gnd_pickle(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return _GndUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DatasetError(path, f"not a readable ground-truth file ({exc})") from None


def _image_path(folder: str, name: str) -> str:
    base = os.path.join(folder, name)
    if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
        return base
    return base + ".jpg"


def load_revisitop(root: str, name: str | None = None) -> Dataset:
    files = sorted(glob.glob(os.path.join(root, "gnd_*.pkl")))
    if name is not None:
        files = [f for f in files if os.path.basename(f) == f"gnd_{name}.pkl"]
    if not files:
        raise DatasetError(root, "no gnd_<name>.pkl ground-truth file (revisitop layout)")
    path = files[0]
    cfg = read_gnd_pickle(path)
    try:
        imlist, qimlist, gnd = list(cfg["imlist"]), list(cfg["qimlist"]), list(cfg["gnd"])
    except (KeyError, TypeError) as exc:
        raise DatasetError(path, f"missing key {exc} (expected imlist, qimlist, gnd)") from None
    if len(gnd) != len(qimlist):
        raise DatasetError(path, f"{len(qimlist)} queries but {len(gnd)} ground-truth entries")
    jpg = os.path.join(root, "jpg")
    bboxes = [tuple(float(v) for v in g["bbx"]) if g.get("bbx") is not None else None for g in gnd]
    clean = [{k: np.asarray(g.get(k, []), dtype=np.int64).ravel() for k in ("easy", "hard", "junk")} for g in gnd]
    dsname = os.path.basename(path)[4:-4]
    return Dataset(dsname, "revisited", [_image_path(jpg, n) for n in imlist],
                   [_image_path(jpg, n) for n in qimlist], clean, bboxes)


def load_classic(root: str) -> Dataset:
    """Original Oxford5k/Paris6k ground truth: positives = good + ok, junk ignored."""
    gt = os.path.join(root, "gt")
    qfiles = sorted(glob.glob(os.path.join(gt, "*_query.txt")))
    if not qfiles:
        raise DatasetError(root, "no gt/*_query.txt files (classic Oxford/Paris layout)")
    jpg = os.path.join(root, "jpg")
    if not os.path.isdir(jpg):
        raise DatasetError(jpg, "no jpg/ image folder (classic Oxford/Paris layout)")
    db = sorted(os.path.splitext(f)[0] for f in os.listdir(jpg) if f.lower().endswith(".jpg"))
    pos_of = {n: i for i, n in enumerate(db)}
    queries, bboxes, gnd = [], [], []
    for qf in qfiles:
        stem = qf[: -len("_query.txt")]
        with open(qf) as f:
            parts = f.read().split()
        if len(parts) != 5:
            raise DatasetError(qf, "expected 'image x0 y0 x1 y1'")
        qname = re.sub(r"^oxc1_", "", parts[0])
        lists = {}
        for kind in ("good", "ok", "junk"):
            try:
                with open(f"{stem}_{kind}.txt") as f:
                    lists[kind] = [pos_of[n] for n in f.read().split() if n in pos_of]
            except FileNotFoundError:
                raise DatasetError(f"{stem}_{kind}.txt", "missing ground-truth list") from None
        queries.append(_image_path(jpg, qname))
        bboxes.append(tuple(float(v) for v in parts[1:]))
        gnd.append({"ok": lists["good"] + lists["ok"], "junk": lists["junk"]})
    return Dataset(os.path.basename(os.path.normpath(root)), "classic", [_image_path(jpg, n) for n in db],
                   queries, gnd, bboxes)


def load_holidays(root: str) -> Dataset:
    jpg = os.path.join(root, "jpg") if os.path.isdir(os.path.join(root, "jpg")) else root
    names = sorted(f for f in os.listdir(jpg) if re.fullmatch(r"\d{6}\.(jpg|jpeg|png)", f.lower()))
    if not names:
        raise DatasetError(root, "no NNNNNN.jpg images (INRIA Holidays layout)")
    nums = np.array([int(n[:6]) for n in names])
    groups = nums // 100
    db = [os.path.join(jpg, n) for n in names]
    qidx = [i for i, n in enumerate(nums) if n % 100 == 0]
    gnd = [{"ok": [j for j in np.flatnonzero(groups == groups[i]) if j != i], "junk": [i]} for i in qidx]
    return Dataset("holidays", "holidays", db, [db[i] for i in qidx], gnd, query_db_index=qidx)


def load_ukbench(root: str) -> Dataset:
    folder = next((os.path.join(root, d) for d in ("full", "jpg") if os.path.isdir(os.path.join(root, d))), root)
    names = sorted(f for f in os.listdir(folder) if re.fullmatch(r"ukbench\d{5}\.jpg", f.lower()))
    if not names:
        raise DatasetError(root, "no ukbenchNNNNN.jpg images (UKBench layout)")
    nums = np.array([int(n[7:12]) for n in names])
    groups = nums // 4
    db = [os.path.join(folder, n) for n in names]
    gnd = [{"ok": list(np.flatnonzero(groups == groups[i])), "junk": []} for i in range(len(db))]
    return Dataset("ukbench", "ukbench", db, list(db), gnd, groups=groups, query_db_index=list(range(len(db))))


def load_instances(root: str) -> Dataset:
    """Folder per instance; each image is a query against all others (itself ignored)."""
    inst = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    db, labels = [], []
    for k, d in enumerate(inst):
        for f in sorted(os.listdir(os.path.join(root, d))):
            if f.lower().endswith(IMAGE_EXTENSIONS):
                db.append(os.path.join(root, d, f))
                labels.append(k)
    if not db:
        raise DatasetError(root, "no instance folders with images")
    labels = np.array(labels)
    gnd = [{"ok": [j for j in np.flatnonzero(labels == labels[i]) if j != i], "junk": [i]} for i in range(len(db))]
    return Dataset(os.path.basename(os.path.normpath(root)), "instances", db, list(db), gnd,
                   groups=labels, query_db_index=list(range(len(db))))


def _read_places_csv(path: str) -> tuple[list[str], np.ndarray]:
    paths, xy = [], []
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                paths.append(os.path.join(os.path.dirname(path), row["path"]))
                xy.append((float(row["east"]), float(row["north"])))
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(path, f"expected a CSV with columns path,east,north ({exc})") from None
    return paths, np.asarray(xy, dtype=np.float64).reshape(-1, 2)


def load_places(root: str, threshold_m: float = 25.0) -> Dataset:
    db, dxy = _read_places_csv(os.path.join(root, "db.csv"))
    qs, qxy = _read_places_csv(os.path.join(root, "queries.csv"))
    dist = np.linalg.norm(qxy[:, None, :] - dxy[None, :, :], axis=-1)
    gnd = [{"ok": list(np.flatnonzero(d <= threshold_m)), "junk": []} for d in dist]
    return Dataset(os.path.basename(os.path.normpath(root)), "places", db, qs, gnd)


LOADERS = {
    "revisitop": load_revisitop,
    "classic": load_classic,
    "holidays": load_holidays,
    "ukbench": load_ukbench,
    "instances": load_instances,
    "places": load_places,
}


def detect_layout(root: str) -> str:
    if glob.glob(os.path.join(root, "gnd_*.pkl")):
        return "revisitop"
    if glob.glob(os.path.join(root, "gt", "*_query.txt")):
        return "classic"
    if os.path.isfile(os.path.join(root, "db.csv")) and os.path.isfile(os.path.join(root, "queries.csv")):
        return "places"
    for d in ("full", "jpg", "."):
        folder = os.path.join(root, d)
        if os.path.isdir(folder):
            files = os.listdir(folder)
            if any(re.fullmatch(r"ukbench\d{5}\.jpg", f.lower()) for f in files):
                return "ukbench"
            if any(re.fullmatch(r"\d{6}\.jpg", f.lower()) for f in files):
                return "holidays"
    if os.path.isfile(os.path.join(root, "ground_truth.json")):
        return "photoset"
    if any(os.path.isdir(os.path.join(root, d)) for d in os.listdir(root)):
        return "instances"
    raise DatasetError(root, "cannot tell the dataset layout; pass --layout with one of "
                             f"{', '.join(sorted(LOADERS))} (the README's 'Evaluation datasets' describes each)")


def load_photoset(root: str) -> Dataset:
    from .photoset import PhotoSet

    ps = PhotoSet.load(root)
    pos_of = {p: i for i, p in enumerate(ps.db)}
    gnd = [{"ok": [pos_of[p] for p in ps.positives[q]], "junk": []} for q in ps.queries]
    return Dataset("photoset", "photoset", ps.db, ps.queries, gnd)


LOADERS["photoset"] = load_photoset


def load_dataset(root: str, layout: str | None = None, **kwargs) -> Dataset:
    if not os.path.isdir(root):
        raise DatasetError(root, "no such dataset folder")
    layout = layout or detect_layout(root)
    if layout not in LOADERS:
        raise DatasetError(root, f"unknown layout {layout!r}; known: {', '.join(sorted(LOADERS))}")
    return LOADERS[layout](root, **kwargs)
