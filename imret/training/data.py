"""Where training images and their instance labels come from.

Each source maps a path to ``(paths, labels)``: images with equal labels show the
same instance. Registered by the name ``imret train --mode`` takes.
"""
from __future__ import annotations

import os

from ..core.errors import DatasetError
from ..core.paths import collect_paths
from ..core.registry import Registry

SOURCES: Registry = Registry("training mode")


@SOURCES.register("unsupervised")
def unlabeled_folder(root: str) -> tuple[list[str], list[int]]:
    """Every photo under ``root`` is its own instance: its positives are strong
    augmentations of it, its negatives the other photos."""
    paths = collect_paths([root])
    return paths, list(range(len(paths)))


@SOURCES.register("instances")
def instance_folders(root: str) -> tuple[list[str], list[int]]:
    """One sub-folder per instance (searched recursively)."""
    if not os.path.isdir(root):
        raise DatasetError(root, "no such folder")
    paths, labels = [], []
    for k, d in enumerate(sorted(e.name for e in os.scandir(root) if e.is_dir())):
        found = collect_paths([os.path.join(root, d)])
        paths += found
        labels += [k] * len(found)
    return paths, labels


@SOURCES.register("pairs")
def pairs_file(path: str) -> tuple[list[str], list[int]]:
    """A text file, a line per query: ``query<TAB>positive[<TAB>positive…]``; paths
    relative to the file's folder; '#' starts a comment line. Images linked by
    pairs, directly or through others, form one instance."""
    if not os.path.isfile(path):
        raise DatasetError(path, "no such pairs file")
    base = os.path.dirname(os.path.abspath(path))
    parent: dict[str, str] = {}

    def find(p: str) -> str:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            cols = [os.path.normpath(os.path.join(base, c.strip())) for c in line.split("\t") if c.strip()]
            if len(cols) < 2:
                raise DatasetError(path, f"line {n}: expected a query and at least one positive, tab-separated")
            for c in cols:
                parent.setdefault(c, c)
            for c in cols[1:]:
                parent[find(c)] = find(cols[0])
    if not parent:
        raise DatasetError(path, "no pairs")
    paths = list(parent)
    roots: dict[str, int] = {}
    labels = [roots.setdefault(find(p), len(roots)) for p in paths]
    return paths, labels
