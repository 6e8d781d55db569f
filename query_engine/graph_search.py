"""Best-first search over a kNN graph: the search layer of HNSW (Malkov & Yashunin 2018) run on
a version's neighbour table, compiled with numba (a dependency already, through pynndescent).

A beam of the `ef` best items found so far; the best few items not yet expanded are expanded (their
table rows read, each unseen neighbour scored), until the best unexpanded item scores below the
worst of a full beam. Compiled, because the loop is per item: in numpy, two rounds of
whole-row expansions cost 3 ms a query at 1M items and reached fewer items than this search
does in a tenth of the time.

Kept apart from query_engine/neighbours.py so that only a process that searches imports numba
(~1.5 s) and compiles the kernel (cached on disk next to this module after the first time).
"""

from __future__ import annotations

import heapq

import numba
import numpy as np
import numpy.typing as npt

# Items expanded together (their rows read and their neighbours scored in one pass).
EXPANDED = 4


@numba.njit(cache=True, nogil=True, fastmath=True)
def _first_visit(visited: npt.NDArray[np.uint64], row: np.int64) -> bool:  # pragma: no cover
    """Mark `row` in the bitset; False when it was marked already."""
    bit = np.uint64(1) << np.uint64(row & 63)
    if visited[row >> 6] & bit:
        return False
    visited[row >> 6] |= bit
    return True


@numba.njit(cache=True, nogil=True, fastmath=True)
def _unseen_of(
    visited: npt.NDArray[np.uint64], row: npt.NDArray[np.int32], out: npt.NDArray[np.int64]
) -> int:  # pragma: no cover
    """The items of a table row not visited yet, marked now, into `out`: how many."""
    m = 0
    for j in range(len(row)):
        r = np.int64(row[j])
        if _first_visit(visited, r):
            out[m] = r
            m += 1
    return m


@numba.njit(cache=True, nogil=True, fastmath=True)
def _score(
    factors: npt.NDArray[np.float32],
    norms: npt.NDArray[np.float32],
    query: npt.NDArray[np.float32],
    query_norm: np.float32,
    rows: npt.NDArray[np.int64],
    out: npt.NDArray[np.float32],
) -> None:  # pragma: no cover
    """Cosine of each of `rows` with the query, into `out`."""
    dim = factors.shape[1]
    for i in range(len(rows)):
        r = rows[i]
        dot = np.float32(0.0)
        for t in range(dim):
            dot += factors[r, t] * query[t]
        denom = norms[r] * query_norm
        out[i] = dot / denom if denom > 0 else np.float32(0.0)


@numba.njit(cache=True, nogil=True, fastmath=True)
def _next_nodes(
    candidates: list[tuple[np.float32, np.int64]],
    beam: list[tuple[np.float32, np.int64]],
    ef: int,
    nodes: npt.NDArray[np.int64],
) -> int:  # pragma: no cover - compiled
    """Pop up to len(nodes) best candidates that can still lead into the beam into `nodes`:
    how many."""
    taken = 0
    while len(candidates) and taken < len(nodes):
        negative, node = candidates[0]
        if len(beam) >= ef and -negative < beam[0][0]:
            break  # nothing left unexpanded can enter the beam through this item
        heapq.heappop(candidates)
        nodes[taken] = node
        taken += 1
    return taken


@numba.njit(cache=True, nogil=True, fastmath=True)
def best_first(
    factors: npt.NDArray[np.float32],
    norms: npt.NDArray[np.float32],
    rows: npt.NDArray[np.int32],
    scores: npt.NDArray[np.float32],
    start: int,
    ef: int,
    expanded: int = EXPANDED,
) -> npt.NDArray[np.int64]:  # pragma: no cover - compiled; exercised through NeighbourTable.walk
    """Rows of the (up to) `ef` items the search found nearest to item `start` by cosine,
    in no order, `start` itself excluded. Scores here are float32 loops the compiler may
    reorder (fastmath: the 64-term dot product vectorizes), approximate to the last bits: the
    caller rescores what it keeps."""
    n, width = rows.shape
    visited = np.zeros((n + 63) // 64, np.uint64)
    _first_visit(visited, np.int64(start))
    query = factors[start]
    query_norm = norms[start]
    # Candidates: a heap of (-score, row), best first; the beam: (score, row), worst first.
    candidates = [(np.float32(0.0), np.int64(0))]
    candidates.pop()
    beam = [(np.float32(0.0), np.int64(0))]
    beam.pop()
    for j in range(width):
        r = np.int64(rows[start, j])
        if not _first_visit(visited, r):
            continue
        heapq.heappush(candidates, (-scores[start, j], r))
        heapq.heappush(beam, (scores[start, j], r))
        if len(beam) > ef:
            heapq.heappop(beam)
    unseen = np.empty(width * expanded, np.int64)
    unseen_scores = np.empty(width * expanded, np.float32)
    nodes = np.empty(expanded, np.int64)
    while len(candidates):
        # The `expanded` best items not expanded yet (those that can still reach the beam) at
        # once: their rows' unseen items, then all their scores in one loop of independent
        # loads, then the heaps. One at a time, each expansion waited on its row's and its
        # items' cache misses in turn: at 678k ALS items, k=100 and a beam of 200, 159 -> 141
        # us a search at 4 (p50 of 300 queries' medians of 3, alternating; the same recall@100
        # 0.962, ~1,236 items scored in ~200 expansions; benchmarks/results/walk-expand/).
        expanding = _next_nodes(candidates, beam, ef, nodes)
        if not expanding:
            break
        m = 0
        for j in range(expanding):
            m += _unseen_of(visited, rows[nodes[j]], unseen[m:])
        _score(factors, norms, query, query_norm, unseen[:m], unseen_scores)
        for i in range(m):
            score, r = unseen_scores[i], unseen[i]
            if len(beam) < ef or score > beam[0][0]:
                heapq.heappush(candidates, (-score, r))
                heapq.heappush(beam, (score, r))
                if len(beam) > ef:
                    heapq.heappop(beam)
    found = np.empty(len(beam), np.int64)
    for i in range(len(beam)):
        found[i] = beam[i][1]
    return found
