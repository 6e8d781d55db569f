"""How one version answers each query kind, and the search that follows it.

`ServingPlan` is read once from a manifest's quality report (or its defaults when the version
has none); `VersionSearch` pairs it with the version's indexes. The worker answers requests
through `VersionSearch`, the builder's quality report measures each candidate plan through the
same methods, and the benchmarks time them: one code path, so a manifest's figures are those of
the code that serves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import numpy.typing as npt
from annoy import AnnoyIndex

from query_engine import banded, banded_max_per, diversity, filtered, search
from query_engine.neighbours import WALK_BEAM, NeighbourTable
from query_engine.selection import Selection
from query_engine.vectors import cosine_scores, exact_cosine, exact_max_inner_product, top_k
from schemas.manifest import (
    DEFAULT_FILTER_THRESHOLD,
    IndexQuality,
    QualityReport,
    TableQuality,
)

FloatArray = npt.NDArray[np.float32]
Rows = npt.NDArray[np.int64]
Ranked = tuple[Rows, FloatArray]
Strategy = Literal["ann", "exact"]
# search_k -1: Annoy's default for the angular index (n * n_trees nodes); for the norm bands,
# every node of each band searched (exact).
DEFAULT_SEARCH_K = -1


@dataclass(frozen=True)
class SimilarPlan:
    """item -> items: the neighbour table first when the version has one (k up to its width by
    a lookup, up to `walk_max_k` by a walk over it); what it cannot answer, by the angular
    index with `search_k`, or an exact scan."""

    strategy: Strategy = "ann"
    search_k: int = DEFAULT_SEARCH_K
    filter_threshold: float = DEFAULT_FILTER_THRESHOLD
    # The index's search_k grows with k (search.scaled_search_k) and its cost with it, while a
    # scan costs about the same for any k: above this k the exact scan is the faster path (0:
    # no limit). From the report's own figures, see index_max_k().
    index_max_k: int = 0
    # An unmeasured table serves lookups (each row is exact up to the graph's recall, ~0.99),
    # not walks (how far they hold is what the quality report measures).
    table: bool = True
    walk_max_k: int = 0
    walk_beam: int = WALK_BEAM
    # (k, beam) ascending: a walk for up to k items keeps beam x k (the cheapest beam that
    # reached the target at that k); walk_beam where none is given (versions before them).
    walk_beams: tuple[tuple[int, int], ...] = ()
    # k within the width: the beam (multiples of k) of a search refining the item's row (0: the
    # row alone), for a graph whose rows miss what their neighbours' rows hold.
    refine: int = 0


@dataclass(frozen=True)
class RecommendPlan:
    """user -> items: the norm bands, the first `exact_items` scanned exactly, the others
    searched with `search_k` while `bound_factor` x the Cauchy-Schwarz bound can beat the k-th
    score; or every band scanned exactly down to the bound."""

    strategy: Strategy = "ann"
    search_k: int = DEFAULT_SEARCH_K
    # Unmeasured versions scan the largest head the quality report tries.
    exact_items: int = banded.EXACT_HEADS[-1]
    bound_factor: float = 1.0
    filter_threshold: float = DEFAULT_FILTER_THRESHOLD


@dataclass(frozen=True)
class ServingPlan:
    similar: SimilarPlan = SimilarPlan()
    recommend: RecommendPlan = RecommendPlan()

    @classmethod
    def from_quality(cls, quality: QualityReport | None) -> ServingPlan:
        """The plan a manifest's quality report chose; the defaults when it has none."""
        if quality is None:
            return cls()
        return cls(
            similar_plan(quality.similar_items, quality.neighbour_table),
            recommend_plan(quality.recommend),
        )

    def log_fields(self) -> dict[str, object]:
        """Flat key=value fields for the log line of a load or swap."""
        s, r = self.similar, self.recommend
        return {
            "similar_strategy": s.strategy,
            "similar_search_k": s.search_k,
            "similar_filter_threshold": s.filter_threshold,
            "similar_index_max_k": s.index_max_k,
            "similar_table": s.table,
            "similar_walk_max_k": s.walk_max_k,
            "similar_walk_beam": s.walk_beam,
            "similar_refine": s.refine,
            "recommend_strategy": r.strategy,
            "recommend_search_k": r.search_k,
            "recommend_exact_items": r.exact_items,
            "recommend_bound_factor": r.bound_factor,
            "recommend_filter_threshold": r.filter_threshold,
        }


def similar_plan(q: IndexQuality, table: TableQuality | None = None) -> SimilarPlan:
    if table is None:
        return SimilarPlan(q.strategy, q.search_k, q.filter_threshold, index_max_k(q))
    return SimilarPlan(
        q.strategy,
        q.search_k,
        q.filter_threshold,
        index_max_k(q),
        table.serves,
        table.walk_max_k,
        table.walk_beam,
        tuple((p.k, p.beam) for p in table.walk if p.serves),
        table.refine,
    )


def index_max_k(q: IndexQuality) -> int:
    """The largest k the angular index answers faster than the exact scan, 0 for any k.

    The report times both at search_k tuned for TUNED_K results; a larger k scales search_k
    and the index's time with it, while the scan's stays: the index is taken to win while k x
    its time stays under the scan's. The true growth is slower than linear (1M items: k=50 took
    2.7x and k=100 4.9x the time of k=10, where the index served k=50 at 1.05x and k=100 at
    0.55x the scan's speed), so this hands k to the scan (recall 1) somewhat early, where the
    scan is at most a little slower; it never keeps a k on an index several times slower."""
    if q.strategy != "ann" or q.search_k < 0 or q.brute_force_queries_per_s <= 0:
        return 0
    return max(search.TUNED_K, int(search.TUNED_K * q.queries_per_s / q.brute_force_queries_per_s))


def recommend_plan(q: IndexQuality) -> RecommendPlan:
    defaults = RecommendPlan()
    return RecommendPlan(
        q.strategy,
        q.search_k,
        defaults.exact_items if q.exact_items is None else q.exact_items,
        defaults.bound_factor if q.bound_factor is None else q.bound_factor,
        q.filter_threshold,
    )


@dataclass(frozen=True)
class VersionSearch:
    """A version's indexes and the plan it serves them by; read-only, safe across threads."""

    angular: AnnoyIndex
    mips: banded.NormBands
    item_factors: FloatArray  # by row (mmapped in a worker)
    item_norms: FloatArray
    plan: ServingPlan = ServingPlan()
    neighbours: NeighbourTable | None = None  # None: a version built without a table

    def with_plan(self, plan: ServingPlan) -> VersionSearch:
        return replace(self, plan=plan)

    def warm(self) -> None:
        """Compile the table's search now when the plan walks it, and the fresh segment's
        reads, so that the first request that walks or the first upsert does not pay the
        compilation (seconds the first time, then numba's cache)."""
        # Fresh items are read through compiled calls: made ready here, while the version
        # loads, not in the serving thread at the first upsert (importing numba there held
        # the requests: a 1M run's first 30 upserts waited 60-460 ms).
        from query_engine import segment_kernels

        segment_kernels.warm()
        plan = self.plan.similar
        if self.neighbours is None or not plan.table or not (plan.walk_max_k or plan.refine):
            return
        if len(self.item_factors) > 1 and self.neighbours.width:
            self.neighbours.walk(self.item_factors, self.item_norms, 0, 1)

    def similar_items(
        self,
        row: int,
        fetch: int,
        keep: Selection | None = None,
        search_k: int | None = None,
        exact: bool = False,
    ) -> Ranked:
        """Items most similar to item `row` (itself excluded), best first, exact cosine scores:
        by the plan (the neighbour table, then an exact scan or the index with its search_k
        unless `search_k` overrides it), among `keep` when the request filters. `exact`: by a
        scan whatever the plan (the live recall sampler's reference)."""
        plan = self.plan.similar
        if not exact and search_k is None:
            found = self.from_table(row, fetch, keep)
            if found is not None:
                return found
        scan_is_faster = plan.strategy == "exact" or 0 < plan.index_max_k < fetch
        if exact or (scan_is_faster and search_k is None):
            if keep is None:
                query = np.asarray(self.item_factors[row])
                return exact_cosine(self.item_factors, self.item_norms, query, fetch, exclude=row)
            return filtered.exact_similar_items(
                self.item_factors, self.item_norms, row, fetch, keep
            )
        budget = search.scaled_search_k(search_k or plan.search_k, fetch)
        if keep is None:
            return search.similar_items(
                self.angular, self.item_factors, self.item_norms, row, fetch, budget
            )
        return filtered.similar_items(
            self.angular,
            self.item_factors,
            self.item_norms,
            row,
            fetch,
            keep,
            plan.filter_threshold,
            budget,
        )[0]

    def from_table(self, row: int, fetch: int, keep: Selection | None = None) -> Ranked | None:
        """The table's answer when the plan lets it give one: a lookup for `fetch` up to its
        width (None when a filter leaves fewer; refined by a search of beam `refine` when
        unfiltered), a walk up to `walk_max_k` unfiltered."""
        plan = self.plan.similar
        if self.neighbours is None or not plan.table:
            return None
        if fetch <= self.neighbours.width:
            if keep is None and plan.refine:
                return self.neighbours.walk(
                    self.item_factors, self.item_norms, row, fetch, plan.refine
                )
            return self.neighbours.lookup(row, fetch, keep)
        if keep is None and fetch <= plan.walk_max_k:
            beam = next((b for k, b in plan.walk_beams if fetch <= k), plan.walk_beam)
            return self.neighbours.walk(self.item_factors, self.item_norms, row, fetch, beam)
        return None

    def recommend(
        self,
        query: FloatArray,
        fetch: int,
        keep: Selection | None = None,
        search_k: int | None = None,
        exact: bool = False,
    ) -> Ranked:
        """Items with the largest inner product with `query`, best first, exact scores, as the
        plan serves them (see similar_items). `exact`: a plain scan of every (passing) item,
        independent of the norm bands: the live recall sampler's reference."""
        plan = self.plan.recommend
        if exact:
            if keep is None:
                return exact_max_inner_product(self.item_factors, query, fetch)
            return filtered.subset_max_inner_product(self.item_factors, query, fetch, keep)
        if plan.strategy == "exact" and search_k is None:
            # Every band scanned exactly, stopping at the norm bound: exact, and cheaper than a
            # full scan whenever the answers live in the long-norm bands.
            if keep is None:
                return banded.max_inner_product(self.mips, query, fetch, -1, len(self.item_norms))
            return filtered.exact_max_inner_product(self.mips, query, fetch, keep)
        budget = search.scaled_search_k(search_k or plan.search_k, fetch)
        head, factor = plan.exact_items, plan.bound_factor
        if keep is None:
            return banded.max_inner_product(self.mips, query, fetch, budget, head, factor)
        return filtered.max_inner_product(
            self.mips, query, fetch, keep, plan.filter_threshold, budget, head, factor
        )[0]

    def recommend_max_per(
        self,
        query: FloatArray,
        k: int,
        max_per: diversity.MaxPer,
        keep: Selection | None = None,
        excluded: Rows | None = None,
        search_k: int | None = None,
        exact: bool = False,
    ) -> Ranked:
        """recommend under `max_per` (query_engine/diversity.py), never returning `excluded`:
        the greedy walk over this plan's answer, widened until it takes k, then over the exact
        path the plan serves unindexed requests by; from the start where the plan would scan."""
        plan = self.plan.recommend
        scans = _scans(plan.strategy, plan.filter_threshold, keep, search_k)
        if keep is None and not exact:  # the constraint counted inside the band walk
            every = len(self.item_norms)
            head = every if scans else plan.exact_items
            budget = search.scaled_search_k(search_k or plan.search_k, k + len(_rows(excluded)))
            return banded_max_per.max_inner_product(
                self.mips,
                query,
                k,
                max_per,
                _rows(excluded),
                -1 if scans else budget,
                head,
                1.0 if scans else plan.bound_factor,
            )

        def run(fetch: int, exhaustive: bool) -> Ranked:
            if exact or not exhaustive:
                return self.recommend(query, fetch, keep, search_k, exact)
            if keep is None:
                return banded.max_inner_product(self.mips, query, fetch, -1, len(self.item_norms))
            return filtered.exact_max_inner_product(self.mips, query, fetch, keep)

        available = len(self.item_norms) if keep is None else keep.count
        return diversity.top_k(run, k, max_per, _rows(excluded), available, exact=exact or scans)

    def similar_items_max_per(
        self,
        row: int,
        k: int,
        max_per: diversity.MaxPer,
        keep: Selection | None = None,
        excluded: Rows | None = None,
        search_k: int | None = None,
        exact: bool = False,
    ) -> Ranked:
        """similar_items under `max_per` (see recommend_max_per); item `row` itself excluded."""
        plan = self.plan.similar
        scans = _scans(plan.strategy, plan.filter_threshold, keep, search_k)

        # The index path: one search with MAX_PER_BUDGET x the budget of the request without
        # max_per, all of MAX_PER_DEPTH x its candidates rescored and kept: the walk widens
        # within them (Annoy gathers `budget` candidates whatever it returns, so a deeper answer
        # costs a partial sort and its rescoring, not a wider search), and only past them
        # searches again.
        wanted = k + len(_rows(excluded))
        budget = search.scaled_search_k(search_k or plan.search_k, wanted)
        if budget < 0:  # Annoy's default for the plain request: n_trees x its candidates
            budget = self.angular.get_n_trees() * (wanted + 1) * search.OVERFETCH
        budget = math.ceil(budget * diversity.MAX_PER_BUDGET)
        collected: list[Ranked] = []  # the index's deepest answer so far
        scored: list[Ranked] = []  # the exact path scores every candidate once, then slices

        def run(fetch: int, exhaustive: bool) -> Ranked:
            if not exhaustive and keep is not None:  # the table, then the filter planner
                return self.similar_items(row, fetch, keep, search_k)
            if not exhaustive:
                # The neighbour table while it holds `fetch` (a lookup, or a walk where the
                # report measured them), the index past it.
                table = None if search_k is not None else self.from_table(row, fetch)
                if table is not None:
                    return table
                if not collected or len(collected[0][0]) < fetch:
                    depth = max(fetch, diversity.MAX_PER_DEPTH * (wanted + 1) * search.OVERFETCH)
                    found = search.similar_items(
                        self.angular, self.item_factors, self.item_norms, row, depth, budget, depth
                    )
                    collected[:] = [found]
                rows, scores = collected[0]
                return rows[:fetch], scores[:fetch]
            if not scored:
                scored.append(self._cosine_all(row, keep))
            rows, scores = scored[0]
            best = top_k(scores, min(fetch, len(scores)))
            return rows[best], scores[best]

        n = len(self.item_norms)
        available = n - 1 if keep is None else keep.count - keep.contains(row)
        return diversity.top_k(run, k, max_per, _rows(excluded), available, exact=exact or scans)

    def _cosine_all(self, row: int, keep: Selection | None) -> Ranked:
        """(candidate rows, their cosine with item `row`): every item but itself, or every
        passing one."""
        query = np.asarray(self.item_factors[row])
        rows = np.arange(len(self.item_norms), dtype=np.int64) if keep is None else keep.rows
        rows = rows[rows != row]
        if keep is None:  # one pass over the catalogue in place, the row itself dropped after
            scores = cosine_scores(self.item_factors, self.item_norms, query)
            return rows, np.delete(scores, row)
        factors = np.asarray(self.item_factors[rows])
        return rows, cosine_scores(factors, self.item_norms[rows], query)


def _rows(rows: Rows | None) -> Rows:
    return np.empty(0, np.int64) if rows is None else np.asarray(rows, dtype=np.int64)


def _scans(
    strategy: Strategy, filter_threshold: float, keep: Selection | None, search_k: int | None
) -> bool:
    """Whether the plan answers this request by a scan (unindexed, or a filter too selective for
    the index): max_per then walks the exact path from the start."""
    return (strategy == "exact" and search_k is None) or (
        keep is not None and filtered.choose(keep, filter_threshold) == "exact"
    )
