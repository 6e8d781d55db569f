"""The fresh segment's compiled parts: at an upsert, the version items a fresh item is listed
under and its cosine with each (similar items); in a request, the fresh items not placed yet
(similar items) and the norm-ordered rows that can beat the version's k-th score (recommend),
each read in one call that returns the few that pass scored exactly, best first.

A similar-items request for a version item reads the cosines its list carries
(query_engine/segment_neighbours.py), in Python: a few numbers, where a compiled call's
dispatch cost ~3.5 us. Until they are placed, fresh items are scored by every request here
(`screened_ranked`). A recommendation reads the first few hundred rows of the segment by
decreasing norm (query_engine/segment_order.py): in numpy ~8 us of calls around a 1-us product.

Compiled with numba (cache=True: on disk next to this module after the first time), made ready
(`warm`) while a version loads or at the first upsert, never in a request.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

# The vectorized product (fastmath) may differ from the exact one in the last bits: it only
# screens, against a threshold lowered by this relative margin, so it never drops an item the
# exact product keeps.
MARGIN = 1e-4


@numba.njit(cache=True, nogil=True, fastmath=True)
def _fast_dot(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:  # pragma: no cover
    dot = np.float32(0.0)
    for t in range(len(a)):
        dot += a[t] * b[t]
    return float(dot)


@numba.njit(cache=True, nogil=True)
def _exact_dot(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:  # pragma: no cover
    """In order, in float64: the few rows screened in are scored once, at least as exactly as
    numpy's float32 product scores the version's."""
    dot = 0.0
    for t in range(len(a)):
        dot += float(a[t]) * float(b[t])
    return dot


@numba.njit(cache=True, nogil=True)
def _ranked(
    rows: npt.NDArray[np.int64],
    vectors: npt.NDArray[np.float32],
    query: npt.NDArray[np.float32],
    threshold: float,
    scale: float,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:  # pragma: no cover - compiled
    """(rows, product / scale) of `rows` whose exact product with `query` (vectors: by row) is
    above `threshold`, best first, ties by row: what a request merges, without numpy's calls
    around a few rows (each ~1 us, more than the scoring)."""
    scores = np.empty(len(rows), np.float32)
    kept = np.empty(len(rows), np.int64)
    m = 0
    for i in range(len(rows)):
        dot = _exact_dot(vectors[rows[i]], query)
        if dot > threshold:
            kept[m] = rows[i]
            scores[m] = np.float32(dot / scale)
            m += 1
    if m < 2:  # mostly: one fresh item enters, or none
        return kept[:m], scores[:m]
    by_row = np.argsort(kept[:m], kind="mergesort")
    kept, scores = kept[:m][by_row], scores[:m][by_row]
    best = np.argsort(-scores, kind="mergesort")  # stable: equal scores stay by row
    return kept[best], scores[best]


@numba.njit(cache=True, nogil=True)
def _holds(rows: npt.NDArray[np.int64], n: int, row: np.int64) -> bool:  # pragma: no cover
    """Whether the first n of `rows` hold `row` (a scan: the arrays are a few rows long)."""
    for j in range(n):  # noqa: SIM110 - numba compiles no generator into any()
        if rows[j] == row:
            return True
    return False


@numba.njit(cache=True, nogil=True)
def screened_ranked(
    rows: npt.NDArray[np.int64],
    units: npt.NDArray[np.float32],
    query: npt.NDArray[np.float32],
    floor: float,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:  # pragma: no cover - compiled
    """(rows, cosine) of `rows` (distinct fresh rows; units: the fresh items' unit rows) whose
    cosine with `query` is above `floor`, best first (ties by row): the items not placed yet,
    which every similar-items request reads until they are."""
    norm = np.sqrt(_exact_dot(query, query))
    # Compared as products with the floor scaled by the query's norm: mostly none passes, and
    # the division is left to the few that do.
    threshold = floor * norm
    lowered = threshold - MARGIN * abs(threshold)
    kept = np.empty(len(rows), np.int64)
    m = 0
    for i in range(len(rows)):
        if _fast_dot(units[rows[i]], query) > lowered:
            kept[m] = rows[i]
            m += 1
    return _ranked(kept[:m], units, query, threshold, norm)


@numba.njit(cache=True, nogil=True)
def reverse_rows(
    rows: npt.NDArray[np.int32],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:  # pragma: no cover - compiled
    """The neighbour table read backwards, as (offsets, owners): the items whose row holds
    version row v are owners[offsets[v]:offsets[v + 1]], ascending. A counting sort, two
    passes over the table (0.3 s at 1M x 32, where an argsort took seconds)."""
    n, width = rows.shape
    offsets = np.zeros(n + 1, np.int64)
    for i in range(n):
        for j in range(width):
            if rows[i, j] >= 0:
                offsets[rows[i, j] + 1] += 1
    for v in range(n):
        offsets[v + 1] += offsets[v]
    fill = offsets[:-1].copy()
    owners = np.empty(offsets[n], np.int32)
    for i in range(n):
        for j in range(width):
            v = rows[i, j]
            if v >= 0:
                owners[fill[v]] = i
                fill[v] += 1
    return offsets, owners


@numba.njit(cache=True, nogil=True)
def listed_under(
    offsets: npt.NDArray[np.int64],
    owners: npt.NDArray[np.int32],
    row: npt.NDArray[np.int64],
    factors: npt.NDArray[np.float32],
    norms: npt.NDArray[np.float32],
    last: npt.NDArray[np.float32],
    unit: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:  # pragma: no cover - compiled
    """(version rows, cosine) a fresh item (`unit`: its unit row; `row`: its nearest version
    rows) is listed under, ascending: each item of `row` and each item whose table row holds
    one of them (`offsets`, `owners`: reverse_rows), where its cosine may beat that item's
    last table score (`last`, screened with MARGIN). The cosine is exact, in float64, as a
    request for that item would score it (the item's factors are its query): requests
    compare it with their floor and score nothing."""
    total = len(row)
    for j in range(len(row)):
        total += offsets[row[j] + 1] - offsets[row[j]]
    reached = np.empty(total, np.int64)
    m = 0
    for j in range(len(row)):
        reached[m] = row[j]
        m += 1
        for at in range(offsets[row[j]], offsets[row[j] + 1]):
            reached[m] = owners[at]
            m += 1
    reached.sort()  # ascending: the factors below are read in order, each once
    cosines = np.empty(total, np.float64)
    kept = 0
    for j in range(total):
        i = reached[j]
        if j and i == reached[j - 1]:
            continue
        cos = _fast_dot(factors[i], unit) / norms[i] if norms[i] > 0 else 0.0
        if cos > last[i] - MARGIN * abs(last[i]):
            reached[kept] = i
            norm = np.sqrt(_exact_dot(factors[i], factors[i]))
            cosines[kept] = _exact_dot(unit, factors[i]) / norm if norm > 0 else 0.0
            kept += 1
    return reached[:kept], cosines[:kept]


@numba.njit(cache=True, nogil=True)
def sorted_ranked(
    sorted_factors: npt.NDArray[np.float32],
    sorted_rows: npt.NDArray[np.int64],
    ascending: npt.NDArray[np.float64],
    tail: npt.NDArray[np.int64],
    factors: npt.NDArray[np.float32],
    query: npt.NDArray[np.float32],
    floor: float,
    bound_margin: float,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], int]:  # pragma: no cover - compiled
    """(rows, inner product, rows of the order read) of the rows whose product with `query`
    is above `floor`, best first (ties by row), among: the rows of the norm order
    (`sorted_factors`, `sorted_rows`; `ascending`: their -norms) whose bound ||q|| ||x||
    (widened by `bound_margin`) beats the floor, and the `tail` rows changed since its sort
    (read from `factors`, by row; their copies in the order are stale and skipped)."""
    reach = np.sqrt(_exact_dot(query, query)) * (1 + bound_margin)
    if reach > 0:
        read = np.searchsorted(ascending, -floor / reach)
    else:
        read = len(sorted_rows) if floor < 0 else 0
    rows = np.empty(read + len(tail), np.int64)
    lowered = floor - MARGIN * abs(floor)
    kept = 0
    for i in range(read + len(tail)):
        if i < read:
            r, vector = sorted_rows[i], sorted_factors[i]
        else:
            r = tail[i - read]
            vector = factors[r]
        if _fast_dot(vector, query) <= lowered:
            continue
        if i >= read or not _holds(tail, len(tail), r):  # in the tail: its copy here is stale
            rows[kept] = r
            kept += 1
    ranked, scores = _ranked(rows[:kept], factors, query, floor, 1.0)
    return ranked, scores, read


def warm() -> None:
    """Compile the kernels now (or read them from numba's cache), for the array types a worker
    passes: a version's factors are read-only maps, a type of their own to numba, so a query
    row of them (and the version's table and factors) gets its own variant, compiled here
    rather than at a worker's first request or upsert (70 ms in the serving thread at 1M)."""
    none, vector = np.zeros(0, np.int64), np.zeros((1, 1), np.float32)
    mapped = vector.copy()
    mapped.flags.writeable = False
    for query in (vector[0], mapped[0]):
        screened_ranked(none, vector, query, 0.0)
        sorted_ranked(vector, np.zeros(1, np.int64), np.zeros(1), none, vector, query, 0.0, 0.0)
    mapped_table = np.zeros((1, 1), np.int32)
    mapped_table.flags.writeable = False
    for rows in (np.zeros((1, 1), np.int32), mapped_table):
        offsets, owners = reverse_rows(rows)
    for factors in (vector, mapped):
        listed_under(
            offsets, owners, np.zeros(1, np.int64), factors, vector[0], vector[0], vector[0]
        )
