"""Pure re-ranking functions on float32 descriptor rows (L2-normalised, one image per row).

Nothing here loops over database items in Python: every function works on whole
matrices (N×D rows, Q×K shortlists, Q×K×D gathered rows), so re-ranking a shortlist
costs a few small matrix products per query whatever the size of the database.
Row positions of −1 mean "no result" (an index holding fewer rows than asked for)
and are carried through as such.
"""
from __future__ import annotations

import numpy as np

from ..descriptor.whitening import l2_normalize

# Rows of the similarity matrix computed at once by ``knn``: bounds memory to
# chunk×N floats (32 MB at 100k rows) while keeping the products large enough for BLAS.
_CHUNK = 1024


def gather(rows: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows at positions ``pos`` (any shape) → (pos.shape×D rows, validity mask);
    padded positions (−1) give zero rows."""
    pos = np.asarray(pos)
    rows = np.asarray(rows)
    valid = pos >= 0
    if not len(rows):
        return np.zeros((*pos.shape, rows.shape[-1]), np.float32), valid
    out = rows[np.where(valid, pos, 0)]
    out[~valid] = 0
    return out.astype(np.float32, copy=False), valid


def similarity_weights(sims: np.ndarray, alpha: float) -> np.ndarray:
    """max(0, s)^α, the weighting of αQE/αDBA (Radenović et al. 2018). α=0 weighs every
    neighbour 1 (numpy defines 0^0 = 1), i.e. plain averaging; a large α keeps only
    the closest neighbours."""
    return np.power(np.maximum(np.asarray(sims, np.float32), 0), np.float32(alpha)).astype(np.float32)


def weighted_sum(x: np.ndarray, nbr: np.ndarray, valid: np.ndarray, sims: np.ndarray, alpha: float,
                 self_weight: float = 1.0, rank_weights: np.ndarray | None = None) -> np.ndarray:
    """L2(w₀·x + Σᵣ wᵣ nbrᵣ) over the valid neighbours: wᵣ = max(0, simsᵣ)^α, or
    ``rank_weights[r]`` when given; w₀ = ``self_weight``. x: M×D, nbr: M×n×D, valid and
    sims: M×n → M×D. The update of αQE, αDBA and global-feature re-ranking."""
    if rank_weights is None:
        w = similarity_weights(np.where(valid, sims, 0), alpha) * valid
    else:
        w = np.asarray(rank_weights, np.float32)[None, :valid.shape[1]] * valid
    return l2_normalize(np.float32(self_weight) * x + np.einsum("mn,mnd->md", w.astype(np.float32), nbr))


def alpha_qe(q: np.ndarray, nbr: np.ndarray, valid: np.ndarray, alpha: float) -> np.ndarray:
    """αQE: q' = L2(q + Σᵢ max(0, q·dᵢ)^α dᵢ) over the valid neighbours.
    q: Q×D, nbr: Q×n×D, valid: Q×n bool → Q×D."""
    return weighted_sum(q, nbr, valid, np.einsum("qd,qnd->qn", q, nbr), alpha)


def average_qe(q: np.ndarray, nbr: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Average query expansion (Chum et al. 2007): the normalised mean of the query and
    its valid neighbours. q: Q×D, nbr: Q×n×D, valid: Q×n bool → Q×D."""
    total = q + np.where(valid[..., None], nbr, 0).sum(1)
    return l2_normalize(total / (1 + valid.sum(1, keepdims=True)))


def pair_sims(a: np.ndarray, rows: np.ndarray, nbr: np.ndarray) -> np.ndarray:
    """a: M×D, nbr: M×k positions into ``rows`` → M×k inner products, −inf where nbr is −1.

    One dot product per pair (no blocked matrix product), so a pair's value does not
    depend on which other rows were computed with it: stored and recomputed
    neighbour lists give bit-identical weights."""
    g, valid = gather(rows, nbr)
    return np.where(valid, np.einsum("md,mkd->mk", np.asarray(a, np.float32), g), -np.inf).astype(np.float32)


def top_k(sims: np.ndarray, k: int, pos: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per row of an M×C score matrix, the k best columns, best first, ties to the earlier
    column → (M×k positions, M×k scores); −inf scores become position −1. ``pos`` (M×C)
    maps columns to positions; default: the column index."""
    m, c = sims.shape
    kk = min(k, c)
    if kk < c:
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
    else:
        part = np.broadcast_to(np.arange(c), (m, c))
    psims = np.take_along_axis(sims, part, 1)
    order = np.lexsort((part, -psims), axis=1)  # by score, then by column for reproducible ties
    cols = np.take_along_axis(part, order, 1)
    out_s = np.take_along_axis(psims, order, 1).astype(np.float32)
    out_p = cols if pos is None else np.take_along_axis(pos, cols, 1)
    out_p = np.where(np.isfinite(out_s), out_p, -1).astype(np.int64)
    if kk < k:
        out_p = np.pad(out_p, ((0, 0), (0, k - kk)), constant_values=-1)
        out_s = np.pad(out_s, ((0, 0), (0, k - kk)), constant_values=-np.inf)
    return out_p, out_s


def knn(queries: np.ndarray, rows: np.ndarray, k: int, exclude: np.ndarray | None = None
        ) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows (inner product) of each query row → (M×k positions, M×k sims),
    best first, padded with −1/−inf. ``exclude[i]``: a position left out of query i's
    list (the query's own row, for neighbour lists within one set)."""
    queries = np.asarray(queries, np.float32)
    rows = np.asarray(rows, np.float32)
    nbr = np.full((len(queries), k), -1, np.int64)
    for s in range(0, len(queries), _CHUNK):
        sims = queries[s:s + _CHUNK] @ rows.T
        if exclude is not None:
            sims[np.arange(len(sims)), exclude[s:s + _CHUNK]] = -np.inf
        nbr[s:s + _CHUNK] = top_k(sims, k)[0]
    return nbr, pair_sims(queries, rows, nbr)


def augment_rows(rows: np.ndarray, nbr: np.ndarray, sims: np.ndarray, alpha: float,
                 which: np.ndarray | None = None, self_weight: float = 1.0,
                 rank_weights: np.ndarray | None = None) -> np.ndarray:
    """αDBA rows: L2(w₀·dᵢ + Σⱼ max(0, sᵢⱼ)^α dⱼ) over each row's neighbour list (w₀ =
    ``self_weight``); with ``rank_weights`` (k numbers) neighbour j of rank r weighs
    ``rank_weights[r]`` instead (Chen & Yao's fixed weights).
    ``which``: positions to compute (default all) → len(which)×D."""
    which = np.arange(len(rows)) if which is None else np.asarray(which, np.int64)
    rows = np.asarray(rows, np.float32)
    out = np.empty((len(which), rows.shape[1]), np.float32)
    for s in range(0, len(which), _CHUNK):
        w = which[s:s + _CHUNK]
        g, valid = gather(rows, nbr[w])
        out[s:s + _CHUNK] = weighted_sum(rows[w], g, valid, sims[w], alpha, self_weight, rank_weights)
    return out


def knn_after_add(rows: np.ndarray, n_old: int, nbr: np.ndarray, sims: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour lists after rows[n_old:] were appended to rows[:n_old] (whose lists are
    ``nbr``/``sims``, n_old×k) → (N×k lists, N×k sims, positions whose list changed).

    An old row's new list is the best k of its old list and the new rows, because any
    row that was not in its top k before still is not: the lists equal a computation
    from scratch while only the new rows are compared with the whole set."""
    rows = np.asarray(rows, np.float32)
    n, k = len(rows), nbr.shape[1]
    new = np.arange(n_old, n)
    nbr_new, sims_new = knn(rows[n_old:], rows, k, exclude=new)
    out_nbr, out_sims = nbr.copy(), sims.copy()
    changed = np.zeros(n_old, bool)
    for s in range(0, n_old, _CHUNK):
        e = min(s + _CHUNK, n_old)
        cand = np.concatenate([sims[s:e], rows[s:e] @ rows[n_old:].T], 1)
        cand_pos = np.concatenate([nbr[s:e], np.broadcast_to(new, (e - s, len(new)))], 1)
        merged, _ = top_k(cand, k, cand_pos)
        changed[s:e] = (merged != nbr[s:e]).any(1)
        out_nbr[s:e] = merged
    redo = np.flatnonzero(changed)
    out_sims[redo] = pair_sims(rows[redo], rows, out_nbr[redo])
    return (np.concatenate([out_nbr, nbr_new]), np.concatenate([out_sims, sims_new]),
            np.concatenate([redo, new]))


def knn_after_remove(rows_kept: np.ndarray, keep: np.ndarray, nbr: np.ndarray, sims: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour lists after removing the rows where ``keep`` (a mask over the old
    positions) is False; ``rows_kept`` are the rows left → (lists, sims, positions whose
    list changed). Lists that lost a member are searched again over the rows left;
    the others keep their members (removing rows cannot promote anything above them)."""
    newpos = np.cumsum(keep) - 1
    newpos[~keep] = -1
    old = nbr[keep]
    mapped = np.where(old >= 0, newpos[np.where(old >= 0, old, 0)], -1)
    out_sims = sims[keep].copy()
    redo = np.flatnonzero(((old >= 0) & (mapped < 0)).any(1))
    if len(redo):
        mapped[redo], out_sims[redo] = knn(np.asarray(rows_kept)[redo], rows_kept, nbr.shape[1], exclude=redo)
    return mapped, out_sims, redo


def merge_requery(ranks: np.ndarray, scores: np.ndarray, head: int, head_scores: np.ndarray,
                  found: np.ndarray, found_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge a re-query of the whole database into a ranking.

    ``ranks``/``scores``: Q×K, the ranking so far; its first ``head`` entries were scored
    again by the new query (``head_scores``, Q×head); ``found``/``found_scores``: Q×F,
    what searching the whole database with the new query returned (−1 pads). The new
    ranking is the union of the head and the found rows, best new score first (ties to
    the lower position), then the old entries past the head that are not in it, in
    their order, cut to K → (Q×K ranks, Q×K scores, Q×K positions in the old ranking, −1
    for rows only the re-query found)."""
    nq, k = ranks.shape
    out_r = np.full((nq, k), -1, np.int64)
    out_s = np.full((nq, k), -np.inf, np.float32)
    out_o = np.full((nq, k), -1, np.int64)
    for i in range(nq):
        pos = np.concatenate([ranks[i, :head], found[i]])
        sc = np.concatenate([head_scores[i], found_scores[i]]).astype(np.float32)
        old = np.concatenate([np.arange(min(head, k)), np.full(found.shape[1], -1)])
        ok = pos >= 0
        pos, sc, old = pos[ok], sc[ok], old[ok]
        uniq, first = np.unique(pos, return_index=True)  # a row in both keeps its head entry (first)
        pos, sc, old = uniq, sc[first], old[first]
        order = np.lexsort((pos, -sc))
        pos, sc, old = pos[order], sc[order], old[order]
        tail = np.arange(head, k)
        tail = tail[(ranks[i, head:] >= 0) & ~np.isin(ranks[i, head:], pos)]
        r = np.concatenate([pos, ranks[i, tail]])[:k]
        out_r[i, :len(r)] = r
        out_s[i, :len(r)] = np.concatenate([sc, scores[i, tail]])[:k]
        out_o[i, :len(r)] = np.concatenate([old, tail])[:k]
    return out_r, out_s, out_o


def resort(scores: np.ndarray, *by_rank: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sort each row of a Q×S score matrix best first (stable: equal scores keep their
    order) and apply the same order to the other Q×S arrays → (scores, *others)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return tuple(np.take_along_axis(a, order, 1) for a in (scores, *by_rank))


def refine_shortlist(q: np.ndarray, cand: np.ndarray, valid: np.ndarray, k: int, alpha: float,
                     weights: np.ndarray | None, self_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Global-feature re-ranking (after Chen & Yao 2025): the query and every shortlisted
    image are replaced by a weighted linear sum of themselves and their own k top-ranked
    neighbours, then compared again.

    q: Q×D, cand: Q×S×D (the shortlist, best first), valid: Q×S. A shortlisted image's
    neighbours are its k most similar other images of the shortlist (the images a
    database-wide neighbour search would mostly return, for S×S products instead of
    S×N); the query's neighbours are the first k of its ranking. Neighbour j of rank r
    weighs ``weights[r]`` when given, else max(0, s)^α → (Q×D query, Q×S new scores)."""
    s_len = cand.shape[1]
    kk = min(k, max(s_len - 1, 0))

    def weigh(sims, ok):
        w = (np.broadcast_to(weights[:kk], sims.shape) if weights is not None
             else similarity_weights(np.where(ok, sims, 0), alpha))
        return np.where(ok, w, 0).astype(np.float32)

    g = cand @ cand.transpose(0, 2, 1)  # batched BLAS: einsum would not use it
    g[:, np.arange(s_len), np.arange(s_len)] = -np.inf
    g[~np.broadcast_to(valid[:, None, :], g.shape)] = -np.inf
    if kk:
        nb = np.argsort(-g, axis=2, kind="stable")[:, :, :kk]  # Q×S×k, within the shortlist
        nb_sims = np.take_along_axis(g, nb, 2)
        mix = np.zeros_like(g)  # Q×S×S neighbour weights, so the sums are one batched product
        np.put_along_axis(mix, nb, weigh(nb_sims, np.isfinite(nb_sims)), 2)
        cand_new = self_weight * cand + mix @ cand
        top = cand[:, :kk]
        wq = weigh(np.einsum("qd,qkd->qk", q, top), valid[:, :kk])
        q_new = self_weight * q + np.einsum("qk,qkd->qd", wq, top)
    else:
        cand_new, q_new = cand, q
    q_new = l2_normalize(q_new)
    cand_new = l2_normalize(cand_new)
    scores = (cand_new @ q_new[:, :, None])[..., 0]
    return q_new, np.where(valid, scores, -np.inf).astype(np.float32)


def k_reciprocal_scores(q: np.ndarray, cand: np.ndarray, valid: np.ndarray, k1: int, k2: int,
                        lam: float) -> np.ndarray:
    """k-reciprocal re-ranking (Zhong et al. 2017) within {query} ∪ shortlist, batched over
    queries → Q×S scores, 1 − d* with d* = (1−λ)·Jaccard + λ·(1 − cosine).

    Per set: R(p, k1) = mutual top-(k1+1) neighbours; extended by R(c, k1/2) of each
    member c that shares more than 2/3 of it with R(p, k1); Gaussian-weighted
    membership vectors, averaged over the k2 nearest (local query expansion); Jaccard
    distance between the query's vector and each candidate's. Set operations are
    matrix products of 0/1 matrices, so the whole batch is a few (S+1)³ products."""
    nq, s_len, _ = cand.shape
    m = s_len + 1
    x = np.concatenate([q[:, None, :], cand], 1)
    ok = np.concatenate([np.ones((nq, 1), bool), valid], 1)
    sims = x @ x.transpose(0, 2, 1)
    pair_ok = ok[:, :, None] & ok[:, None, :]
    sims = np.where(pair_ok, sims, -np.inf)
    order = np.argsort(-sims, axis=2, kind="stable")
    place = np.empty_like(order)  # place[q, p, j]: j's 0-based rank in p's list (0 is p itself)
    np.put_along_axis(place, order, np.arange(m)[None, None, :], 2)

    def reciprocal(k):
        near = (place <= k) & pair_ok
        return (near & near.transpose(0, 2, 1)).astype(np.float32)

    r = reciprocal(k1)
    r_half = reciprocal(max(1, int(round(k1 / 2))))
    overlap = r @ r_half.transpose(0, 2, 1)  # [p, c] = |R(p) ∩ R_half(c)|
    joins = r * (overlap > (2 / 3) * r_half.sum(2)[:, None, :])
    expanded = np.maximum(r, (joins @ r_half > 0).astype(np.float32))
    v = expanded * np.exp(-(2 - 2 * np.where(pair_ok, sims, 1)))
    v /= np.maximum(v.sum(2, keepdims=True), 1e-12)
    local = ((place < k2) & pair_ok).astype(np.float32)
    v = (local @ v) / np.maximum(local.sum(2, keepdims=True), 1)
    shared = np.minimum(v[:, :1, :], v[:, 1:, :]).sum(2)  # Σ min(V_query, V_candidate)
    jaccard = 1 - shared / (2 - shared)
    d = (1 - lam) * jaccard + lam * (1 - np.where(valid, sims[:, 0, 1:], 0))
    return np.where(valid, 1 - d, -np.inf).astype(np.float32)
