"""bench_adapt_split cuts the database and restricts the ground truth to the cut exactly."""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from bench_adapt_split import half_maps  # noqa: E402

from imret.evaluation.datasets import Dataset  # noqa: E402
from imret.training.probe import DatasetMaps  # noqa: E402


def test_half_maps_keeps_the_half_and_renumbers_its_ground_truth():
    db = [f"/p/{i}.jpg" for i in range(6)]
    gnd = [{"easy": np.array([2, 4]), "hard": np.array([5]), "junk": np.array([0])},   # query on photo 0
           {"easy": np.array([0]), "hard": np.array([]), "junk": np.array([1])},       # on photo 1
           {"easy": np.array([3]), "hard": np.array([1]), "junk": np.array([3])},      # on photo 3
           {"easy": np.array([5]), "hard": np.array([]), "junk": np.array([4])}]       # on photo 4
    ds = Dataset("t", "revisited", db, ["/p/0.jpg", "/p/1.jpg", "/p/3.jpg", "/p/4.jpg"], gnd)
    maps = DatasetMaps(ds, [[torch.full((1,), float(i))] for i in range(6)],
                       [[torch.full((1,), 10.0 + q)] for q in range(4)])
    even = [0, 2, 4]
    new = half_maps(maps, even, {1, 3, 5}, "new")  # queries whose photos are odd, database even
    assert new.dataset.db == ["/p/0.jpg", "/p/2.jpg", "/p/4.jpg"]
    assert [float(m[0]) for m in new.db] == [0.0, 2.0, 4.0]
    # photo 1's query keeps its positive 0 (now 0); photo 3's has none left among 0, 2, 4: dropped
    assert new.dataset.queries == ["/p/1.jpg"] and [float(m[0]) for m in new.queries] == [11.0]
    assert [g["easy"].tolist() for g in new.dataset.gnd] == [[0]] and new.dataset.gnd[0]["junk"].tolist() == []
    own = half_maps(maps, even, set(even), "own")
    assert own.dataset.queries == ["/p/0.jpg"]  # photo 4's query has only 5 as positive: dropped
    g = own.dataset.gnd[0]
    assert (g["easy"].tolist(), g["hard"].tolist(), g["junk"].tolist()) == ([1, 2], [], [0])
