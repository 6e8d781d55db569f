"""The fresh segment's items by decreasing norm: recommend's scan stops at the norm bound.

An item x scores at most ||q|| * ||x|| against a query q (Cauchy-Schwarz), so once the next
item's bound cannot beat the k-th score known (the version's answer's, or the segment's own k-th
so far), no later item can enter the answer: the scan stops, as the version's norm bands do
(query_engine/banded.py). With the version's k-th score as the floor, the rows whose bound beats
it are found by a binary search and read in one product (on matrix-factorization factors the
answers have the longest norms: a few hundred rows of a 10,000-item segment); with none (no
version answer), block by block until the k-th found stops it. Exact.

Upserts arrive one at a time between batches; sorting at each would cost a request's time per
upsert. So the rows changed since the last sort (upserted, re-upserted or removed) are a tail,
scanned in full by every request (their copy in the sorted part is skipped), and the order is
sorted again once the tail passes an eighth of it.

numpy, and with a floor one compiled pass (query_engine/segment_kernels.py); the segment
(query_engine/segment.py) owns the factors and calls it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
Rows = npt.NDArray[np.int64]
BoolMask = npt.NDArray[np.bool_]
Ranked = tuple[Rows, FloatArray]
# (local rows) -> which of them may be returned (live, passing the request's filter, not excluded)
Allowed = Callable[[Rows], BoolMask]

# Rows in the first block; each next block is GROWTH times longer (as the version's bands grow).
FIRST_BLOCK = 256
GROWTH = 4
# The tail is sorted in once it holds more than this, or an eighth of the sorted rows.
MIN_TAIL = 64
# float32 scores can exceed the bound computed in float32 by a few ulps: the bound is widened by
# this relative margin so that rounding never stops a scan early.
BOUND_MARGIN = 1e-5


class NormOrder:
    """The segment's rows by decreasing norm, contiguous, plus the tail changed since."""

    def __init__(self, dim: int) -> None:
        self.rows = np.empty(0, np.int64)  # local rows, longest first
        self.norms = np.empty(0, np.float32)
        # -norms, ascending: the bound's binary search (inside the compiled scan; the block
        # scan, without a floor, searches it with numpy)
        self._ascending = np.empty(0, np.float64)
        self.factors = np.empty((0, dim), np.float32)  # self.rows' vectors, in that order
        self._tail: dict[int, None] = {}  # local rows changed since the sort, in order
        self._tail_rows: Rows | None = None  # _tail as an array, until it changes
        self._kernel: Callable[..., tuple[Rows, FloatArray, int]] | None = (
            None  # segment_kernels.py, once used
        )
        self.read = 0  # sorted rows the last `top` read (the bound stopped it there)

    def changed(self, local: int) -> None:
        """A row was upserted or removed: scanned from the tail until the next sort."""
        self._tail[local] = None
        self._tail_rows = None
        if self._kernel is None:
            from query_engine import segment_kernels

            segment_kernels.warm()
            self._kernel = segment_kernels.sorted_ranked

    def outdated(self) -> bool:
        return len(self._tail) > max(MIN_TAIL, len(self.rows) // 8)

    def sort(self, factors: FloatArray, norms: FloatArray, live: BoolMask) -> None:
        """Sort the live rows of the segment (`factors`, `norms`, `live`: by local row)."""
        rows = np.flatnonzero(live).astype(np.int64)
        order = np.argsort(-norms[rows], kind="stable")
        self.rows = rows[order]
        self.norms = np.ascontiguousarray(norms[self.rows])
        self._ascending = -self.norms.astype(np.float64)
        self.factors = np.ascontiguousarray(factors[self.rows])
        self._tail.clear()
        self._tail_rows = None

    def _reaching(self, floor: float, reach: float) -> int:
        """How many of the sorted rows have a bound (norm * reach) above `floor`."""
        if reach <= 0:
            return len(self.rows) if floor < 0 else 0
        return int(np.searchsorted(self._ascending, -floor / reach))

    def top(
        self, factors: FloatArray, query: FloatArray, k: int, floor: float, allowed: Allowed | None
    ) -> Ranked:
        """The k allowed rows with the largest inner product with `query` scoring above
        `floor` (the k-th score of what they are merged with; -inf: none), best first.
        `factors`: the segment's, by local row (the tail is read from it); `allowed` None:
        every row (none removed, nothing filtered)."""
        if self._tail_rows is None:
            self._tail_rows = np.fromiter(self._tail, np.int64, len(self._tail))
        tail = self._tail_rows
        if math.isfinite(floor) and self._kernel is not None:
            # The rows whose bound beats the floor, in one compiled pass (the bound's binary
            # search too): the floor only rises as items are found, so none past them can
            # enter. (Blocks of 256, 1,024, ... read 1,280 rows for a tenth of the requests at
            # 1M, where a few hundred can pass.)
            query = np.asarray(query, np.float32)  # as compiled: another dtype compiles again
            rows, scores, self.read = self._kernel(
                self.factors,
                self.rows,
                self._ascending,
                tail,
                factors,
                query,
                floor,
                BOUND_MARGIN,
            )
            if allowed is not None and len(rows):
                ok = allowed(rows)
                rows, scores = rows[ok], scores[ok]
            return rows[:k], scores[:k]
        # Not np.linalg.norm: a few microseconds of checks, a tenth of what this scan costs.
        reach = math.sqrt(float(query @ query)) * (1 + BOUND_MARGIN)
        found_rows: list[Rows] = []
        found_scores: list[FloatArray] = []
        kth = floor

        def take(rows: Rows, scores: FloatArray, stale: Rows | None = None) -> None:
            nonlocal kth
            above = np.flatnonzero(scores > kth)  # mostly few: the checks run on them only
            if not len(above):
                return
            rows, scores = rows[above], scores[above]
            ok = np.ones(len(rows), bool) if allowed is None else allowed(rows)
            if stale is not None:  # changed since the sort: scored in the tail
                ok &= ~np.isin(rows, stale)
            found_rows.append(rows[ok])
            found_scores.append(scores[ok])
            every = np.concatenate(found_scores)
            if len(every) >= k:
                kth = max(kth, float(np.partition(every, len(every) - k)[len(every) - k]))

        if len(tail):
            take(tail, np.asarray(factors[tail] @ query, dtype=np.float32))
        start, size, n = 0, FIRST_BLOCK, len(self.rows)
        if math.isfinite(kth):  # one block of the rows whose bound beats the floor
            size = max(1, self._reaching(kth, reach))
        while start < n and self.norms[start] * reach > kth:
            stop = min(n, start + size)
            scores = np.asarray(self.factors[start:stop] @ query, dtype=np.float32)
            take(self.rows[start:stop], scores, tail if len(tail) else None)
            start, size = stop, size * GROWTH
        self.read = start
        if not found_rows:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        rows, scores = np.concatenate(found_rows), np.concatenate(found_scores)
        best = np.lexsort((rows, -scores))[:k]
        return rows[best], scores[best]
