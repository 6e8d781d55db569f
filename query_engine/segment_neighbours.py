"""Which fresh items can enter an item's similar items: found when a fresh item arrives, so
that a request reads a few candidates instead of scanning the segment.

A fresh item x enters item i's top k over (version + segment) only if cos(i, x) beats the k-th
score of i's answer from the version. When x arrives:

- its row: its nearest version items, exact cosine (what a version item's neighbour-table row
  is), found by a walk over the table from a few seeds of the angular index;
- x is listed under each version item i that holds an item of x's row in its own table row
  (or is one), where cos(i, x) beats i's last table score: the neighbour table read backwards
  (`reverse_rows`, built once per version in a thread at its first upsert: 0.3 s and 4 bytes
  per table entry, 136 MB, at 1M x 32) gives those i;
- by an exact scan of the segment's unit rows, x is entered under every fresh item whose
  threshold (its row's last score) it beats, and every fresh item beating x's threshold
  under x.

A request for a version item i reads the fresh items listed under i, and scores them exactly:
one list. The candidates are the same as reading the fresh items whose row holds i or an item of
i's table row (33 scattered lists a request, as until 2 December), less those that cannot beat
i's last table score, below any floor this read serves. The lists are kept as one sorted array
(version row -> fresh items, CSR) rebuilt between batches once more than PENDING fresh items
were placed since; those, and the items not placed yet, are read by every request until then (a
lookup in a dict per table neighbour cost more than the rest of the request). "x in i's top k"
is not symmetric: i may rank deep in x's own list while x is near i's neighbours (at 100k items,
x in i's top 10: i among x's 64 nearest for 75% of such pairs, i or one of its 32 table
neighbours for 99.5%). This part is approximate; `annrec bench freshness` measures the recall
against brute force. A request for a fresh item reads the fresh items entered under it: exact.

Only where the version's answer reaches as deep as the row (its k-th score at least the row's
last: k within the row, a filter that leaves enough of it) are candidates read this way; any
other request (k past the row, a selective filter, an exact answer, a version without a table)
scans the segment, as before.

numpy + Annoy, and compiled reads (query_engine/segment_kernels.py); the segment
(query_engine/segment.py) owns it.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
import numpy.typing as npt
from annoy import AnnoyIndex

from query_engine.plan import VersionSearch
from query_engine.search import OVERFETCH
from query_engine.segment_order import BoolMask
from query_engine.selection import Selection
from query_engine.vectors import cosine_scores, top_k

FloatArray = npt.NDArray[np.float32]
Rows = npt.NDArray[np.int64]
Ranked = tuple[Rows, FloatArray]

# Version items kept as a fresh item's row (and attached to it).
ROW_WIDTH = 64
# A fresh item's row: SEEDS items from the angular index (searching SEED_BUDGET nodes per item
# wanted), then WALK_ROUNDS rounds over the table: the rows of the best SEEDS found not expanded
# yet, every new item scored exactly (~2,000 items scored). At 1M x 64, 150 fresh items, one
# BLAS thread on a busy machine (not a repo command): (16 seeds, 64, 2 rounds) 0.9 ms an upsert,
# recall@10 of the row 0.70; (32, 256, 2) 1.8 ms, 0.93; (32, 512, 2) 3.6 ms, 0.96; the plan's
# own search (search_k 28,160) 3.9 ms. The row only attaches the item (what a request for a
# fresh item returns is searched for it as before), so the cheaper one.
SEEDS = 32
SEED_BUDGET = 256
WALK_ROUNDS = 2
Listed = list[tuple[float, int]]  # (cosine, fresh local row), best first
# The lists are sorted into one array (CSR) once more than PENDING fresh items were placed
# since the last sort: sorting 10,000 x 64 entries costs ~40 ms (and O(n_items): the offsets),
# between batches (`discover`), never in a request. The items placed since are kept in a dict
# by version row meanwhile, so a request reads its own entries only.
PENDING = 256


def _floats(array: FloatArray) -> Sequence[float]:
    """A float32 array read element by element as Python floats (a memoryview: a numpy
    scalar costs ~10x more to read)."""
    return cast(Sequence[float], array.data)


def _best_first(entry: tuple[float, int]) -> tuple[float, int]:
    return -entry[0], entry[1]


def key_of_fresh(local: int) -> int:
    """The key of a fresh item (by local row) among items' keys; version items are their row."""
    return -1 - local


class SegmentNeighbours:
    """Per fresh item its row of nearest version items (its threshold); per version item the
    fresh items listed under it; per fresh item the fresh items that can enter its answer."""

    def __init__(self) -> None:
        # fresh local row -> (the version rows it is listed under, its cosine with each)
        self._listed: dict[int, tuple[Rows, FloatArray]] = {}
        # Version row v -> the fresh items listed under it at the last sort and their cosine
        # with v: _members[_offsets[v]:_offsets[v + 1]], _cosines alike. Memoryviews: a
        # request reads a few entries, each a Python number (a numpy scalar costs ~10x more).
        # Items withdrawn since (removed, or a new vector) are _stale there, skipped.
        self._offsets = np.zeros(1, np.int64).data
        self._members = np.empty(0, np.int64).data
        self._cosines = _floats(np.empty(0, np.float32))
        self._stale: set[int] = set()
        # Placed since the sort: by version row, (cosine, fresh local); and counted.
        self._recent: dict[int, list[tuple[float, int]]] = {}
        self._pending: dict[int, None] = {}
        # Fresh items whose row and places are not found yet (`discover`, between batches, on
        # a time budget: an upsert costs its request-time share, not 2 ms at once).
        self._waiting: dict[int, None] = {}
        self._table_last: FloatArray | None = None  # the version's table rows' last score
        self._last = _floats(np.empty(0, np.float32))  # the same, read in requests
        self._reverse: tuple[Rows, npt.NDArray[np.int32]] | None = None  # reverse_rows
        self._reversing: threading.Thread | None = None
        self._entering: dict[int, set[int]] = {}  # fresh local -> fresh locals that can enter
        self._placed: dict[int, list[int]] = {}  # fresh local -> keys it was placed under
        self._thresholds = np.empty(0, np.float32)  # by fresh local row (inf: none)
        self._search: VersionSearch | None = None
        self._waiting_rows: Rows | None = None  # _waiting as an array, until it changes
        self._kernel: Callable[..., Ranked] | None = None  # segment_kernels.py, once used

    def queue(self, local: int, search: VersionSearch) -> None:
        """Fresh item `local` arrived (or got a new vector): read by every request until
        `discover` has found its row and places."""
        self.withdraw(local)
        self._waiting[local] = None
        self._waiting_rows = None
        if self._kernel is None:
            from query_engine import segment_kernels

            segment_kernels.warm()
            self._kernel = segment_kernels.screened_ranked
        if len(self._thresholds) <= local:  # inf: no row yet, its requests scan
            grown = np.full(max(local + 1, 2 * len(self._thresholds)), np.inf, np.float32)
            grown[: len(self._thresholds)] = self._thresholds
            self._thresholds = grown
        if self._search is not search:
            self._search = search
            self._offsets = np.zeros(len(search.item_norms) + 1, np.int64).data
            self._table_last, self._reverse, self._reversing = None, None, None
            table = search.neighbours
            if table is not None:  # plain views: a memmap's indexing costs microseconds
                self._table_last = np.ascontiguousarray(table.scores[:, -1], np.float32)
                self._last = _floats(self._table_last)
                rows = np.asarray(table.rows, np.int32)
                self._reversing = threading.Thread(
                    target=self._read_backwards, args=(search, rows), name="table-reverse"
                )
                self._reversing.daemon = True
                self._reversing.start()

    def _read_backwards(self, search: VersionSearch, rows: npt.NDArray[np.int32]) -> None:
        """The table's reverse lists, off the serving thread (compiled, without the GIL);
        until they are there, upserted items wait and every request reads them. At the lowest
        CPU priority: at full priority its ~0.3 s at 1M took the core the serving thread needs
        on 2 cores shared with Kafka and the clients, and a run's first upserts waited
        100-240 ms for their first reply (5-50 ms before it existed)."""
        from query_engine.segment_kernels import reverse_rows

        with contextlib.suppress(OSError, AttributeError):  # Linux: a thread's own niceness
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        reverse = reverse_rows(rows)
        if self._search is search:  # not replaced by another version's meanwhile
            self._reverse = reverse

    def discover(
        self, factors: FloatArray, units: FloatArray, live: BoolMask, budget_s: float
    ) -> int:
        """Find the rows and places of the items waiting, oldest first, while less than
        `budget_s` seconds were spent (the last may overrun it); the number found. `factors`,
        `units`: the segment's vectors and unit rows by local row, `live` which are served."""
        started, found = time.perf_counter(), 0
        if self._reverse is None and self._reversing is not None and self._waiting:
            self._reversing.join(None if math.isinf(budget_s) else budget_s)
            if self._reverse is None:
                return 0
        while self._waiting and time.perf_counter() - started < budget_s:
            local = next(iter(self._waiting))
            del self._waiting[local]
            self._waiting_rows = None
            self._add(local, factors[local], units, live)
            self._pending[local] = None
            rows, cosines = self._listed[local]
            for row, cosine in zip(rows.tolist(), cosines.tolist(), strict=True):
                self._recent.setdefault(row, []).append((cosine, local))
            found += 1
        if len(self._pending) > PENDING:
            self._sort()
        return found

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _add(self, local: int, vector: FloatArray, units: FloatArray, live: BoolMask) -> None:
        """Find fresh item `local`'s row, attach it, and enter it where it can be similar."""
        assert self._search is not None  # queued with the version's search
        search = self._search
        if len(self._thresholds) < len(units):
            grown = np.full(len(units), np.inf, np.float32)
            grown[: len(self._thresholds)] = self._thresholds
            self._thresholds = grown
        rows, scores = self._version_row(search, vector)
        self._listed[local] = self._listed_under(search, rows, units[local])
        own = float(scores[-1]) if len(scores) else -np.inf
        self._thresholds[local] = own
        placed = self._placed.setdefault(local, [])
        n = len(live)
        norm = float(np.linalg.norm(vector))
        cos = units[:n] @ (vector / norm) if norm > 0 else np.zeros(n, np.float32)
        others = live.copy()
        others[local] = False
        for g in np.flatnonzero(others & (cos > self._thresholds[:n])).tolist():
            self._entering.setdefault(g, set()).add(local)
            placed.append(key_of_fresh(g))
        self._entering[local] = set(np.flatnonzero(others & (cos > own)).tolist())

    def withdraw(self, local: int) -> None:
        """Fresh item `local` is removed or gets a new vector: out of every list."""
        for key in self._placed.pop(local, ()):
            self._entering.get(-1 - key, set()).discard(local)
        self._entering.pop(local, None)
        listed = self._listed.pop(local, None)
        if listed is not None and local in self._pending:  # out of the lists since the sort
            for row in listed[0].tolist():
                entries = [e for e in self._recent[row] if e[1] != local]
                if entries:
                    self._recent[row] = entries
                else:
                    del self._recent[row]
        elif listed is not None:
            self._stale.add(local)  # in the sorted lists: skipped there until the next sort
        self._pending.pop(local, None)
        if self._waiting.pop(local, 0) is None:
            self._waiting_rows = None
        if local < len(self._thresholds):
            self._thresholds[local] = np.inf

    def candidates(self, key: int, floor: float) -> Rows | None:
        """The fresh items (local rows) that can enter the answer of item `key` whose k-th
        score from the version is `floor`; None when `floor` is below what the lists cover
        (the row's last score): scan instead."""
        if key < 0:
            local = -1 - key
            if floor < float(self._thresholds[local]):
                return None
            entering = self._entering.get(local, ())
            waiting = np.fromiter(self._waiting, np.int64, len(self._waiting))
            return np.concatenate([np.fromiter(entering, np.int64, len(entering)), waiting])
        if self._table_last is None or floor < self._last[key]:
            return None
        listed = self._members[self._offsets[key] : self._offsets[key + 1]]
        recent = self._recent.get(key, ())
        return np.asarray(
            [
                *(m for m in listed if m not in self._stale),
                *(m for _, m in recent),
                *self._waiting,
            ],
            np.int64,
        )

    def above(self, key: int, floor: float, units: FloatArray, query: FloatArray) -> Listed | None:
        """The candidates of item `key` (as `candidates`) whose cosine with `query` is above
        `floor`: (cosine, fresh row), each row once, best first (ties by row); None: scan.
        `units`: the segment's unit rows by local row. A version item's query is its own
        factors: its listed items' cosines were computed when they were listed, so a request
        compares a few numbers (the items not placed yet are scored in one compiled call)."""
        if key < 0 or self._kernel is None or self._table_last is None:
            listed = self.candidates(key, floor)
            if listed is None:
                return None
            unique = np.unique(listed)  # listed twice: once
            norm = math.sqrt(float(query @ query))
            products = units[unique] @ query
            hit = np.flatnonzero(products > floor * norm)
            unique, scores = unique[hit], (products[hit] / norm).astype(np.float32)
            best = np.lexsort((unique, -scores))
            return list(zip(scores[best].tolist(), unique[best].tolist(), strict=True))
        if floor < self._last[key]:
            return None
        start, stop = self._offsets[key], self._offsets[key + 1]
        recent = self._recent.get(key)
        if start == stop and recent is None and not self._waiting:
            return []  # most requests at 1M x 10,000 fresh
        cosines = self._cosines[start:stop]
        found = [
            (c, m) for c, m in zip(cosines, self._members[start:stop], strict=True) if c > floor
        ]
        if self._stale and found:
            found = [e for e in found if e[1] not in self._stale]
        if recent is not None:
            found += [e for e in recent if e[0] > floor]
        if self._waiting:
            if self._waiting_rows is None:
                self._waiting_rows = np.fromiter(self._waiting, np.int64, len(self._waiting))
            # float32 as compiled: another dtype would compile again, inside a request
            rows, scores = self._kernel(
                self._waiting_rows, units, np.asarray(query, np.float32), floor
            )
            found += zip(scores.tolist(), rows.tolist(), strict=True)
        if len(found) > 1:
            found.sort(key=_best_first)
        return found

    def _sort(self) -> None:
        """Every fresh item's lists as one array sorted by version row."""
        n = 0 if self._search is None else len(self._search.item_norms)
        listed = list(self._listed.values())
        version = np.concatenate([r for r, _ in listed]) if listed else np.empty(0, np.int64)
        cosines = np.concatenate([c for _, c in listed]) if listed else np.empty(0, np.float32)
        owners = np.repeat(
            np.fromiter(self._listed, np.int64, len(self._listed)), [len(r) for r, _ in listed]
        )
        order = np.argsort(version, kind="stable")
        self._members = np.ascontiguousarray(owners[order], np.int64).data
        self._cosines = _floats(np.ascontiguousarray(cosines[order], np.float32))
        offsets = np.concatenate([[0], np.cumsum(np.bincount(version, minlength=n))])
        self._offsets = offsets.astype(np.int64).data
        self._pending, self._recent, self._stale = {}, {}, set()

    def _listed_under(
        self, search: VersionSearch, row: Rows, unit: FloatArray
    ) -> tuple[Rows, FloatArray]:
        """The version rows whose requests read the fresh item (`unit`: its unit row; `row`:
        its nearest version rows) and its cosine with each, as such a request scores it."""
        if self._reverse is None or self._table_last is None:  # no table: requests scan
            return np.empty(0, np.int64), np.empty(0, np.float32)
        from query_engine.segment_kernels import listed_under

        offsets, owners = self._reverse
        rows, cosines = listed_under(
            offsets,
            owners,
            np.asarray(row, np.int64),
            np.asarray(search.item_factors),
            np.asarray(search.item_norms, np.float32),
            self._table_last,
            np.asarray(unit, np.float32),
        )
        # float32, as every other score: a cosine rounded to the floor's own float32 value
        # ties with the version's k-th item, which a tie keeps (segment.merged)
        return rows, cosines.astype(np.float32)

    @staticmethod
    def _version_row(search: VersionSearch, vector: FloatArray) -> Ranked:
        """A fresh item's nearest version items, exact cosine, best first: a few seeds from the
        angular index at a small budget, then a walk over the neighbour table (the seeds' rows,
        then the rows of the best found), as a kNN graph takes an insertion. The plan's own
        search for 64 items cost 3.9 ms an upsert at 1M: 100 upserts/s would have taken 40% of
        the serving thread. Without a table: the index, as the plan says."""
        plan = search.plan.similar
        fetch = min(ROW_WIDTH, len(search.item_norms))
        table = search.neighbours
        if table is None or plan.strategy == "exact":
            return similar_to_vector(
                search.angular,
                search.item_factors,
                search.item_norms,
                vector,
                fetch,
                None,
                plan.search_k,
                plan.strategy == "exact",
            )
        seeds = search.angular.get_nns_by_vector(vector, SEEDS, SEEDS * SEED_BUDGET)
        found = np.asarray(seeds, np.int64)
        expanded = np.zeros(0, np.int64)
        scores = np.empty(0, np.float32)
        for _ in range(WALK_ROUNDS):
            best = found[top_k(scores, SEEDS)] if len(scores) else found
            best = np.setdiff1d(best, expanded)
            expanded = np.union1d(expanded, best)
            reached = np.asarray(table.rows[best], np.int64).ravel()
            new = np.setdiff1d(reached, found)
            new_scores = cosine_scores(
                np.asarray(search.item_factors[new]), search.item_norms[new], vector
            )
            if not len(scores):  # the seeds' own scores, once
                scores = cosine_scores(
                    np.asarray(search.item_factors[found]), search.item_norms[found], vector
                )
            found = np.concatenate([found, new])
            scores = np.concatenate([scores, new_scores])
        best = top_k(scores, fetch)
        return found[best], scores[best]


def similar_to_vector(
    angular: AnnoyIndex,
    item_factors: FloatArray,
    item_norms: FloatArray,
    query: FloatArray,
    fetch: int,
    keep: Selection | None = None,
    search_k: int = -1,
    exact: bool = False,
) -> Ranked:
    """The version's items most similar to a vector it does not hold (a fresh item), best
    first, exact cosine: the angular index's candidates by vector rescored, or an exact scan
    (`exact`, a search_k of 0, or a filter the candidates do not satisfy)."""
    n = len(item_norms)
    if not exact and search_k != 0:
        fraction = 1.0 if keep is None else max(keep.fraction, 1e-6)
        pool = min(n, int((fetch + 1) * OVERFETCH / fraction))
        found = np.asarray(angular.get_nns_by_vector(query, pool, search_k), dtype=np.int64)
        if keep is not None:
            found = found[keep.passes(found)]
        if len(found) >= fetch or (keep is None and len(found) == n):
            scores = cosine_scores(np.asarray(item_factors[found]), item_norms[found], query)
            best = top_k(scores, min(fetch, len(found)))
            return found[best], scores[best]
    rows = np.arange(n, dtype=np.int64) if keep is None else keep.rows
    scores = cosine_scores(np.asarray(item_factors[rows]), item_norms[rows], query)
    best = top_k(scores, min(fetch, len(rows)))
    return rows[best], scores[best]
