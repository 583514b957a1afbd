"""Tests of imret.evaluation.metrics against hand-computed values and a literal
port of revisitop's loop-based compute_map / compute_ap."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imret.evaluation.metrics import (
    average_precision,
    classic_map,
    compute_map,
    rank1_rate,
    recall_at_n,
    revisited_protocol,
    ukbench_score,
)


# --------------------------------------------------------------------------- reference
def ref_compute_ap(ranks, nres):
    """revisitop evaluate.compute_ap, verbatim apart from names."""
    nimgranks = len(ranks)
    ap = 0
    recall_step = 1.0 / nres
    for j in np.arange(nimgranks):
        rank = ranks[j]
        if rank == 0:
            precision_0 = 1.0
        else:
            precision_0 = float(j) / rank
        precision_1 = float(j + 1) / (rank + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.0
    return ap


def ref_compute_map(ranks, gnd, kappas=()):
    """revisitop evaluate.compute_map; ``ranks`` is N x Q (one column per query) as there."""
    map_ = 0.0
    nq = len(gnd)
    aps = np.zeros(nq)
    pr = np.zeros(len(kappas))
    prs = np.zeros((nq, len(kappas)))
    nempty = 0
    for i in np.arange(nq):
        qgnd = np.array(gnd[i]["ok"])
        if qgnd.shape[0] == 0:
            aps[i] = float("nan")
            prs[i, :] = float("nan")
            nempty += 1
            continue
        try:
            qgndj = np.array(gnd[i]["junk"])
        except KeyError:
            qgndj = np.empty(0)
        pos = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgnd)]
        junk = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgndj)]
        k = 0
        ij = 0
        if len(junk):
            ip = 0
            while ip < len(pos):
                while ij < len(junk) and pos[ip] > junk[ij]:
                    k += 1
                    ij += 1
                pos[ip] = pos[ip] - k
                ip += 1
        ap = ref_compute_ap(pos, len(qgnd))
        map_ = map_ + ap
        aps[i] = ap
        pos += 1
        for j in np.arange(len(kappas)):
            kq = min(max(pos), kappas[j])
            prs[i, j] = (pos <= kq).sum() / kq
        pr = pr + prs[i, :]
    if nq - nempty == 0:
        return float("nan"), aps, np.full(len(kappas), np.nan), prs
    map_ = map_ / (nq - nempty)
    pr = pr / (nq - nempty)
    return map_, aps, pr, prs


# --------------------------------------------------------------------------- average_precision
def test_ap_positives_at_ranks_0_and_2():
    expected = (1 + (1 / 2 + 2 / 3) / 2) / 2  # 19/24
    assert average_precision(np.array([0, 2]), 2) == pytest.approx(expected)
    assert expected == pytest.approx(19 / 24)


def test_ap_perfect_and_single_late_positive():
    assert average_precision(np.array([0, 1, 2]), 3) == pytest.approx(1.0)
    # one positive at rank 3: (0/3 + 1/4) / 2
    assert average_precision(np.array([3]), 1) == pytest.approx(1 / 8)


def test_ap_unretrieved_positives_count_against():
    # 2 of 4 positives retrieved at ranks 0 and 1: half the recall
    assert average_precision(np.array([0, 1]), 4) == pytest.approx(0.5)
    assert average_precision(np.array([], dtype=np.int64), 3) == 0.0


def test_ap_no_positives_is_nan():
    assert math.isnan(average_precision(np.array([], dtype=np.int64), 0))


# --------------------------------------------------------------------------- compute_map
def test_compute_map_hand_case():
    ranks = np.array([[3, 7, 1, 0, 2]])  # positives 3 (rank 0) and 1 (rank 2)
    m, aps, _, _ = compute_map(ranks, [{"ok": [3, 1]}])
    assert m == pytest.approx(19 / 24)
    assert aps[0] == pytest.approx(19 / 24)


def test_compute_map_junk_before_positive_shifts_it_up():
    ranks = np.array([[5, 0, 1, 2, 3, 4]])
    # positive 1 at rank 2; junk 5 at rank 0 is removed -> effective rank 1
    m_junk, *_ = compute_map(ranks, [{"ok": [1], "junk": [5]}])
    m_plain, *_ = compute_map(ranks, [{"ok": [1]}])
    assert m_junk == pytest.approx((0 / 1 + 1 / 2) / 2)  # 0.25
    assert m_plain == pytest.approx((0 / 2 + 1 / 3) / 2)  # 1/6


def test_compute_map_junk_after_positive_changes_nothing():
    ranks = np.array([[0, 1, 2, 3, 4, 5]])
    m1, *_ = compute_map(ranks, [{"ok": [0, 3], "junk": [4, 5]}])
    m2, *_ = compute_map(ranks, [{"ok": [0, 3]}])
    assert m1 == pytest.approx(m2)
    assert m1 == pytest.approx((1 + (1 / 3 + 2 / 4) / 2) / 2)


def test_compute_map_junk_between_positives():
    # ranking: pos, junk, junk, pos, neg, pos -> effective ranks 0, 1, 3
    ranks = np.array([[10, 20, 21, 11, 30, 12]])
    m, *_ = compute_map(ranks, [{"ok": [10, 11, 12], "junk": [20, 21]}])
    expected = (1 + (1 / 1 + 2 / 2) / 2 + (2 / 3 + 3 / 4) / 2) / 3
    assert m == pytest.approx(expected)


def test_compute_map_query_without_positives_is_nan_and_excluded():
    ranks = np.array([[0, 1, 2, 3], [0, 1, 2, 3], [3, 2, 1, 0]])
    gnd = [{"ok": [0]}, {"ok": []}, {"ok": [0, 1]}]
    m, aps, mpr, prs = compute_map(ranks, gnd, kappas=[1])
    assert aps[0] == pytest.approx(1.0)
    assert math.isnan(aps[1])
    # query 2: positives at ranks 2 and 3
    ap2 = ((0 / 2 + 1 / 3) / 2 + (1 / 3 + 2 / 4) / 2) / 2
    assert aps[2] == pytest.approx(ap2)
    assert m == pytest.approx((1.0 + ap2) / 2)  # mean over 2 queries, not 3
    assert np.isnan(prs[1]).all()
    assert mpr[0] == pytest.approx((1.0 + 0.0) / 2)


def test_compute_map_all_queries_without_positives():
    m, aps, mpr, _ = compute_map(np.array([[0, 1]]), [{"ok": []}], kappas=[1, 5])
    assert math.isnan(m)
    assert np.isnan(aps).all()
    assert np.isnan(mpr).all() and mpr.shape == (2,)


def test_compute_map_truncated_ranking_counts_missing_positive():
    ranks = np.array([[0, 1, 2]])  # positive 7 never retrieved
    m, *_ = compute_map(ranks, [{"ok": [0, 7]}])
    assert m == pytest.approx(0.5)


def test_precision_at_k_as_revisitop():
    # positives at 1-based ranks 2, 3 and 7
    ranks = np.array([[90, 0, 1, 91, 92, 93, 2, 94, 95, 96, 97]])
    _, _, mpr, prs = compute_map(ranks, [{"ok": [0, 1, 2]}], kappas=[1, 5, 10])
    # k=1: kq=1 -> 0/1; k=5: kq=5 -> 2/5; k=10: kq=min(7,10)=7 -> 3/7 (not 3/10)
    assert prs[0] == pytest.approx([0.0, 2 / 5, 3 / 7])
    assert mpr == pytest.approx([0.0, 2 / 5, 3 / 7])


def test_precision_at_k_after_junk_removal():
    ranks = np.array([[50, 0, 51, 1]])
    _, _, _, prs = compute_map(ranks, [{"ok": [0, 1], "junk": [50, 51]}], kappas=[1, 2])
    assert prs[0] == pytest.approx([1.0, 1.0])


def test_precision_at_k_no_retrieved_positive_is_zero():
    _, _, mpr, prs = compute_map(np.array([[0, 1, 2]]), [{"ok": [9]}], kappas=[1, 5])
    assert prs[0] == pytest.approx([0.0, 0.0])


# --------------------------------------------------------------------------- revisited protocol
def _revisited_case():
    gnd = [
        {"easy": [0, 2], "hard": [4], "junk": [1]},
        {"easy": [3], "hard": [5, 2], "junk": []},
    ]
    ranks = np.array([
        [1, 0, 4, 3, 2, 5],
        [5, 3, 0, 1, 2, 4],
    ])
    return ranks, gnd


def test_revisited_protocol_hand_case():
    ranks, gnd = _revisited_case()
    out = revisited_protocol(ranks, gnd, kappas=(1, 5))
    # Easy:   q0 ok {0,2} junk {1,4} -> ranks 0,2 -> 19/24;  q1 ok {3} junk {5,2} -> rank 0 -> 1
    # Medium: q0 ok {0,2,4} junk {1} -> ranks 0,1,3 -> 65/72; q1 ok {3,5,2} -> ranks 0,1,4 -> 17/20
    # Hard:   q0 ok {4} junk {1,0,2} -> rank 0 -> 1;       q1 ok {5,2} junk {3} -> ranks 0,3 -> 17/24
    easy = (19 / 24 + 1) / 2
    medium = (65 / 72 + 17 / 20) / 2
    hard = (1 + 17 / 24) / 2
    assert out["easy"]["mAP"] == pytest.approx(100 * easy)
    assert out["medium"]["mAP"] == pytest.approx(100 * medium)
    assert out["hard"]["mAP"] == pytest.approx(100 * hard)
    assert len({round(out[s]["mAP"], 6) for s in ("easy", "medium", "hard")}) == 3
    # mP@5 (1-based positions, kq = min(max pos, 5))
    assert out["easy"]["mP@5"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert out["medium"]["mP@5"] == pytest.approx(100 * (3 / 4 + 3 / 5) / 2)
    assert out["hard"]["mP@5"] == pytest.approx(100 * (1 + 2 / 4) / 2)
    for s in ("easy", "medium", "hard"):
        assert out[s]["mP@1"] == pytest.approx(100.0)
        assert set(out[s]) == {"mAP", "mP@1", "mP@5"}


def test_revisited_protocol_matches_reference_setups():
    ranks, gnd = _revisited_case()
    out = revisited_protocol(ranks, gnd)
    setups = {
        "easy": [{"ok": g["easy"], "junk": g["junk"] + g["hard"]} for g in gnd],
        "medium": [{"ok": g["easy"] + g["hard"], "junk": g["junk"]} for g in gnd],
        "hard": [{"ok": g["hard"], "junk": g["junk"] + g["easy"]} for g in gnd],
    }
    for name, g in setups.items():
        m, _, pr, _ = ref_compute_map(ranks.T.copy(), g, [1, 5, 10])
        assert out[name]["mAP"] == pytest.approx(100 * m)
        assert [out[name][f"mP@{k}"] for k in (1, 5, 10)] == pytest.approx(list(100 * pr))


def test_revisited_query_without_hard_is_excluded_from_hard_only():
    gnd = [{"easy": [0], "hard": [], "junk": []}, {"easy": [1], "hard": [0], "junk": []}]
    ranks = np.array([[0, 1, 2], [1, 2, 0]])
    out = revisited_protocol(ranks, gnd, kappas=())
    assert out["easy"]["mAP"] == pytest.approx(100.0)
    # only query 1 counts for Hard: positive 0 at rank 2, easy 1 junked -> rank 1
    assert out["hard"]["mAP"] == pytest.approx(100 * (0 / 1 + 1 / 2) / 2)


# --------------------------------------------------------------------------- property tests
@st.composite
def _ranking_case(draw):
    n = draw(st.integers(1, 25))
    nq = draw(st.integers(1, 4))
    ranks, gnd = [], []
    for _ in range(nq):
        perm = draw(st.permutations(list(range(n))))
        labels = draw(st.lists(st.sampled_from(["ok", "junk", "neg"]), min_size=n, max_size=n))
        ranks.append(perm)
        ids = draw(st.permutations(list(range(n))))  # list order of ok/junk need not be sorted
        gnd.append({"ok": [i for i in ids if labels[i] == "ok"],
                    "junk": [i for i in ids if labels[i] == "junk"]})
    return np.array(ranks, dtype=np.int64).reshape(nq, n), gnd


def _same(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and np.array_equal(np.isnan(a), np.isnan(b)) and \
        np.allclose(np.nan_to_num(a), np.nan_to_num(b), rtol=1e-12, atol=1e-12)


@settings(max_examples=300, deadline=None)
@given(_ranking_case())
def test_compute_map_equals_revisitop_reference(case):
    ranks, gnd = case
    kappas = [1, 3, 5, 10]
    m, aps, pr, prs = compute_map(ranks, gnd, kappas)
    rm, raps, rpr, rprs = ref_compute_map(ranks.T.copy(), gnd, kappas)
    assert _same(m, rm)
    assert _same(aps, raps)
    assert _same(pr, rpr)
    assert _same(prs, rprs)
    valid = ~np.isnan(aps)
    assert ((aps[valid] >= 0) & (aps[valid] <= 1 + 1e-12)).all()


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_ap_is_one_when_positives_ranked_first(data):
    n = data.draw(st.integers(1, 30))
    npos = data.draw(st.integers(1, n))
    ids = data.draw(st.permutations(list(range(n))))
    ok, rest = ids[:npos], ids[npos:]
    head = data.draw(st.permutations(ok))
    tail = data.draw(st.permutations(rest))
    ranking = np.array([list(head) + list(tail)])
    m, aps, _, prs = compute_map(ranking, [{"ok": ok, "junk": []}], kappas=[1, npos])
    assert m == pytest.approx(1.0)
    assert prs[0] == pytest.approx([1.0, 1.0])
    # junk interleaved among the leading positives changes nothing
    if tail:
        njunk = data.draw(st.integers(0, len(tail)))
        junk = list(tail[:njunk])
        mixed = data.draw(st.permutations(list(head) + junk))
        ranking2 = np.array([list(mixed) + list(tail[njunk:])])
        m2, *_ = compute_map(ranking2, [{"ok": ok, "junk": junk}])
        assert m2 == pytest.approx(1.0)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_ap_within_unit_interval_and_below_one_if_negative_first(data):
    n = data.draw(st.integers(2, 30))
    perm = data.draw(st.permutations(list(range(n))))
    npos = data.draw(st.integers(1, n - 1))
    ok = data.draw(st.lists(st.sampled_from(list(range(n))), min_size=npos, max_size=npos, unique=True))
    m, *_ = compute_map(np.array([perm]), [{"ok": ok}])
    assert 0.0 < m <= 1.0
    if perm[0] not in ok:
        assert m < 1.0


# --------------------------------------------------------------------------- classic / ukbench / recall
def test_classic_map_percent_with_junk():
    ranks = np.array([[5, 0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5]])
    positives = [[1], [0, 2]]
    junk = [[5], []]
    expected = 100 * (0.25 + (1 + (1 / 2 + 2 / 3) / 2) / 2) / 2
    assert classic_map(ranks, positives, junk) == pytest.approx(expected)
    # without junk the first query's positive sits one rank lower
    expected_nojunk = 100 * (1 / 6 + 19 / 24) / 2
    assert classic_map(ranks, positives) == pytest.approx(expected_nojunk)


def test_ukbench_perfect_ranking_is_four():
    groups = np.repeat(np.arange(3), 4)
    ranks = np.array([np.concatenate([np.flatnonzero(groups == groups[i])[::-1],
                                      np.flatnonzero(groups != groups[i])]) for i in range(12)])
    assert ukbench_score(ranks, groups) == pytest.approx(4.0)


def test_ukbench_hand_case():
    groups = np.repeat(np.arange(2), 4)
    ranks = np.array([
        [0, 1, 2, 3, 4, 5, 6, 7],  # 4 of group 0
        [4, 0, 1, 2, 5, 6, 7, 3],  # only itself of group 1 in the top 4
    ])
    assert ukbench_score(ranks, groups, query_ids=np.array([0, 4])) == pytest.approx(2.5)
    # default query ids are 0..Q-1: query 1 belongs to group 0 -> 4 and 3
    assert ukbench_score(ranks, groups) == pytest.approx((4 + 3) / 2)


def test_recall_at_n_hand_case():
    ranks = np.array([
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],   # first positive at rank 2
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],   # no positives: skipped
        [3, 0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11],   # positive first
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],   # positive at rank 7
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],   # positive at rank 11
    ])
    positives = [[2, 9], [], [3], [7], [11]]
    out = recall_at_n(ranks, positives, (1, 5, 10))
    assert out == pytest.approx({"R@1": 25.0, "R@5": 50.0, "R@10": 75.0})
    assert rank1_rate(ranks, positives) == pytest.approx(25.0)


def test_recall_at_n_defaults_to_recall_at_1_5_10():
    # first positives at 0-based ranks 0, 4, 5 and 9: each default N splits them differently
    ranks = np.tile(np.arange(12), (4, 1))
    out = recall_at_n(ranks, [[0], [4], [5], [9]])
    assert out == {"R@1": 25.0, "R@5": 50.0, "R@10": 100.0}


def test_recall_at_n_all_skipped_is_nan():
    out = recall_at_n(np.array([[0, 1]]), [[]], (1,))
    assert math.isnan(out["R@1"])


def test_recall_at_n_counts_a_positive_at_0_based_rank_n_as_outside_the_top_n():
    # first positives at 0-based ranks 1 and 5: in the top 2 and top 6, not the top 1 or top 5
    ranks = np.array([[4, 0, 1, 2, 3, 5], [0, 1, 2, 3, 4, 5]])
    out = recall_at_n(ranks, [[0], [5]], (1, 2, 5, 6))
    assert out == {"R@1": 0.0, "R@2": 50.0, "R@5": 50.0, "R@6": 100.0}
    assert rank1_rate(ranks, [[0], [5]]) == 0.0


def test_recall_at_n_positive_missing_from_a_truncated_ranking_is_never_found():
    # query 0's only positive (9) is not among its 3 results; query 1's is first
    out = recall_at_n(np.array([[0, 1, 2], [7, 1, 2]]), [[9], [7]], (1, 3))
    assert out == {"R@1": 50.0, "R@3": 50.0}
