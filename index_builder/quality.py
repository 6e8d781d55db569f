"""The quality report: recall@k against exact brute force over a grid of search_k, per index.

Queries are sampled from the version itself (items for item -> items, users for user -> items)
and split in two: the curve and the choice of search_k use the tuning half; the recall and
queries/s reported for the chosen search_k come from the held-out half, so the figure a worker
trusts was not fitted to the queries that measured it. Timings are one query at a time on one
thread (BLAS pinned to one thread), through query_engine.plan, the same code the worker runs.

The strategy: the fastest point (search_k; for user -> items also the exact head of the norm
bands) that reaches the target recall while answering faster than the exact scan measured in the
same run; when none does, workers scan (exact, and faster than the index would be at that
recall). Each curve stops as soon as the answer is known.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from annoy import AnnoyIndex
from threadpoolctl import threadpool_limits

from index_builder.inputs import Factors
from index_builder.progress import progress_bar
from query_engine import banded, search
from query_engine.neighbours import NeighbourTable
from query_engine.plan import (
    RecommendPlan,
    ServingPlan,
    SimilarPlan,
    VersionSearch,
    recommend_plan,
    similar_plan,
)
from query_engine.selection import Selection
from query_engine.vectors import exact_inner_product_top_k, recall_at_k, top_k, unit_rows
from schemas.manifest import (
    FilterPoint,
    IndexQuality,
    QualityReport,
    RefinePoint,
    SearchKPoint,
    TableQuality,
    WalkPoint,
)

FloatArray = npt.NDArray[np.float32]
# One group of the curve: search_k doubles within it. For user -> items, (exact head, bound
# factor); (None, None) for item -> items.
Group = tuple[int | None, float | None]
Rows = npt.NDArray[np.int64]
# The version under the plan of one point of the curve: (search_k, group) -> version
PlanAt = Callable[[int, Group], VersionSearch]
# One query asked of a version (query number) -> found item rows; with a filter's selection
Ask = Callable[[VersionSearch, int], Rows]
# (query number, a filter's selection) -> found item rows, under a fixed plan
FilteredAsk = Callable[[int, Selection], Rows]
# The filter curve measures the index path at every selectivity.
_ANN_ONLY: dict[str, Any] = {"strategy": "ann", "filter_threshold": 0.0}

# The bound factor of a plan that scans the exact head and searches no band after it.
HEAD_ONLY = 0.0
STOP_RECALL = 0.995  # past this, more search_k buys nothing worth measuring
# Selectivities the filter threshold is searched over (random subsets of the catalogue), and
# the queries per selectivity (each costs one exact-over-subset scan and one index search).
FILTER_SELECTIVITIES = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)
FILTER_QUERIES = 100
# Queries of the pilot; the rest are measured unless the index path was slower than
# PILOT_MARGIN x the exact path on them (then it cannot win: the exact path serves).
FILTER_PILOT = 20
PILOT_MARGIN = 0.5


@dataclass(frozen=True)
class _Queries:
    """The sampled queries: item rows for item -> items, user vectors for user -> items."""

    item_rows: npt.NDArray[np.int64]
    users: FloatArray

    @classmethod
    def sample(cls, rng: np.random.Generator, factors: Factors, n_queries: int) -> _Queries:
        items = factors.item_factors
        item_rows = _sample(rng, len(items), 2 * n_queries)
        # Without users in the version, item vectors stand in as user queries.
        users = factors.user_factors if len(factors.user_factors) >= 2 else items
        return cls(item_rows, users[_sample(rng, len(users), 2 * n_queries)])


@dataclass(frozen=True)
class _ItemTruth:
    """The exact nearest items (cosine) of the sampled item rows, best first, computed once at
    the deepest k the report asks: the index curve, the table's lookups and refinements (k) and
    its walks (WALK_KS, on the first WALK_QUERIES rows) each scanned the catalogue for the same
    rows again (11 scans, 18 of a 1M version's 26 s of quality report)."""

    rows: Rows
    top: Rows  # (len(rows), deepest)

    @classmethod
    def of(cls, items: FloatArray, rows: Rows, deepest: int) -> _ItemTruth:
        unit = unit_rows(items)
        return cls(rows, _exact(unit, unit[rows], min(deepest, len(items) - 1), exclude=rows))

    def first(self, n: int) -> _ItemTruth:
        return _ItemTruth(self.rows[:n], self.top[:n])

    def at(self, k: int) -> Rows:
        return self.top[:, :k]


def measure_quality(
    angular: AnnoyIndex,
    mips: banded.NormBands,
    factors: Factors,
    *,
    n_trees: int,
    k: int = search.TUNED_K,
    target_recall: float = 0.95,
    n_queries: int = 200,
    seed: int = 0,
    neighbours: NeighbourTable | None = None,
) -> QualityReport:
    rng = np.random.default_rng(seed)
    items = factors.item_factors
    norms = np.linalg.norm(items, axis=1).astype(np.float32)
    # The index paths are measured without the table (what serves what the table cannot).
    version = VersionSearch(angular, mips, items, norms)
    queries = _Queries.sample(rng, factors, n_queries)
    truth = _ItemTruth.of(items, queries.item_rows, deepest=max(k, *WALK_KS))
    with threadpool_limits(1, user_api="blas"):
        similar = _similar_quality(version, truth, k, n_trees, target_recall)
        table = None
        if neighbours is not None:
            table = _table_quality(replace(version, neighbours=neighbours), truth, k, target_recall)
        recommend = _recommend_quality(version, queries, k, n_trees, target_recall)
        # Filtered queries, at the strategy just chosen: where the planner switches to
        # exact-over-subset (query_engine/filtered.py). Each kind has its own query set (a small
        # catalogue or user table yields fewer than FILTER_QUERIES), so each is capped by it.
        filtered_paths = [
            ("similar_items", similar, _filtered_similar(version, similar, queries.item_rows, k)),
            ("recommend", recommend, _filtered_recommend(version, recommend, queries.users, k)),
        ]
        n_queries_of = {"similar_items": len(queries.item_rows), "recommend": len(queries.users)}
        similar, recommend = (
            _with_filter_plan(
                label,
                served,
                ann,
                exact,
                len(items),
                min(n_queries_of[label], FILTER_QUERIES),
                target_recall,
                rng,
            )
            for label, served, (ann, exact) in filtered_paths
        )
    return QualityReport(
        k=k,
        target_recall=target_recall,
        similar_items=similar,
        recommend=recommend,
        neighbour_table=table,
    )


# k above the table's width where a walk over it is measured (those below the catalogue), and
# the beams (multiples of k) tried at each, smallest first: on 678k ALS items at k=100, beams
# 2 / 3 / 4 reached 0.958 / 0.970 / 0.977 (200 queries), at about 0.45 / 0.65 / 1x the time of
# beam 4, which served k=100 when 3 was not tried. The walks' queries: their truth comes with
# the lookups' (_ItemTruth); with 100, beam 2's 95% lower bound at k=100 fell short of 0.95
# there (mean 0.955), with 200 other queries it was 0.952.
WALK_KS = (50, 100, 200)
WALK_BEAMS = (1, 2, 3, 4)
WALK_QUERIES = 200
# Beams of a search refining a lookup (k within the width) the report tries, smallest first (0:
# the row alone), and the recall they aim at (95% lower bound): on 1M synthetic items the rows
# alone gave 0.970.
REFINE_BEAMS = (0, 2, 4)
TABLE_TARGET = 0.99


def _table_quality(
    version: VersionSearch, truth: _ItemTruth, k: int, target: float
) -> TableQuality:
    """The neighbour table: a lookup's recall@k over every sampled item (nothing is tuned on
    them), refined by searches of growing beam until one reaches the aim; and a walk at each k
    of WALK_KS above its width with growing beams, through VersionSearch as the worker calls
    it. Walks serve up to the last k that reaches the target (95% lower bound) in a row, each
    k with the smallest beam that reached it."""
    assert version.neighbours is not None
    width = version.neighbours.width
    # A round costs tens of microseconds, next to milliseconds for any other path: the table
    # aims at TABLE_TARGET even when the version's target is lower (it serves from that one).
    aim = max(target, TABLE_TARGET)
    refine_curve: list[RefinePoint] = []
    for beam in REFINE_BEAMS:
        refined = version.with_plan(ServingPlan(similar=SimilarPlan(table=True, refine=beam)))
        point = RefinePoint(rounds=beam, **_recall_and_speed(refined, truth, k))
        refine_curve.append(point)
        if point.recall_low >= aim:
            break  # the smallest beam reaching the aim: larger ones only cost time
    chosen = _cheapest_reaching(refine_curve, aim, target)
    walk, max_k, walk_beam = _walk_quality(version, truth.first(WALK_QUERIES), target)
    return TableQuality(
        width=width,
        heldout_queries=len(truth.rows),
        refine=chosen.rounds,
        refine_curve=refine_curve,
        recall_at_k=chosen.recall_at_k,
        recall_low=chosen.recall_low,
        queries_per_s=chosen.queries_per_s,
        serves=chosen.recall_low >= target,
        walk=walk,
        walk_max_k=max_k,
        walk_beam=walk_beam,
    )


def _walk_quality(
    version: VersionSearch, truth: _ItemTruth, target: float
) -> tuple[list[WalkPoint], int, int]:
    """(every walk point measured, the serving ones marked; the largest k served; the largest
    beam served): at each k of WALK_KS above the width, beams from the smallest until one
    reaches the target; the first k none reaches ends the walks."""
    assert version.neighbours is not None
    width = version.neighbours.width
    points: list[WalkPoint] = []
    max_k, needed = 0, WALK_BEAMS[0]
    for wide in [w for w in WALK_KS if width < w < len(version.item_factors)] if width else []:
        reached = None
        for beam in WALK_BEAMS:
            plan = SimilarPlan(table=True, walk_max_k=wide, walk_beam=beam)
            measured = _recall_and_speed(version.with_plan(ServingPlan(similar=plan)), truth, wide)
            reaches = measured["recall_low"] >= target
            points.append(
                WalkPoint(
                    k=wide,
                    beam=beam,
                    recall_at_k=measured["recall_at_k"],
                    queries_per_s=measured["queries_per_s"],
                    serves=reaches,
                )
            )
            if reaches:
                reached = beam
                break
        if reached is None:
            break
        max_k, needed = wide, max(needed, reached)
    return points, max_k, needed


def _cheapest_reaching(curve: list[RefinePoint], aim: float, target: float) -> RefinePoint:
    """The smallest beam reaching the aim; else the smallest reaching the target; else the best
    recall. A refinement that does not reach the aim is not worth its cost: on 1M synthetic
    items two rounds of the walk this search replaced took recall@10 from 0.970 to 0.972 at a
    30th of the lookup's speed."""
    for bar in (aim, target):
        reaching = [p for p in curve if p.recall_low >= bar]
        if reaching:
            return reaching[0]
    return max(curve, key=lambda p: p.recall_at_k)


def _recall_and_speed(version: VersionSearch, truth: _ItemTruth, k: int) -> dict[str, float]:
    """Mean recall@k, its 95% lower bound and queries/s of version.similar_items on the truth's
    rows."""
    rows, best = truth.rows, truth.at(k)
    found: dict[int, Rows] = {}

    def run(q: int) -> None:
        found[q] = version.similar_items(int(rows[q]), k)[0]

    qps = _queries_per_s(run, np.arange(len(rows)))
    recall, low = _mean_and_low([recall_at_k(found[q], best[q]) for q in range(len(rows))])
    return {"recall_at_k": recall, "recall_low": low, "queries_per_s": qps}


def _similar_quality(
    version: VersionSearch, truth: _ItemTruth, k: int, n_trees: int, target: float
) -> IndexQuality:
    """item -> items: the angular index at doubling search_k, against the exact scan the worker
    runs (cosine over the raw factors: a pre-normalised matrix would flatter the scan ~2x, and
    the worker has none)."""
    rows = truth.rows
    exact = version.with_plan(ServingPlan(similar=SimilarPlan("exact", table=False)))
    return _index_quality(
        "similar_items",
        lambda search_k, _group: version.with_plan(
            ServingPlan(similar=SimilarPlan("ann", search_k, table=False))
        ),
        lambda s, q: s.similar_items(int(rows[q]), k)[0],
        lambda q: exact.similar_items(int(rows[q]), k),
        exact,
        truth.at(k),
        search_k_limit=len(version.item_factors) * n_trees,
        first_search_k=(k + 1) * search.OVERFETCH,
        groups=[(None, None)],
        target=target,
    )


def _recommend_quality(
    version: VersionSearch, queries: _Queries, k: int, n_trees: int, target: float
) -> IndexQuality:
    """user -> items: the norm bands at doubling search_k per (exact head, bound factor)."""
    items, users = version.item_factors, queries.users
    return _index_quality(
        "recommend",
        lambda search_k, group: version.with_plan(
            ServingPlan(recommend=RecommendPlan("ann", search_k, group[0] or 0, group[1] or 1.0))
        ),
        lambda s, q: s.recommend(users[q], k)[0],
        lambda q: exact_inner_product_top_k(items, users[q], k),
        # Exact strategy: every band scanned exactly, stopping at the norm bound.
        version.with_plan(ServingPlan(recommend=RecommendPlan("exact"))),
        _exact(items, users, k),
        search_k_limit=max(b.stop - b.start for b in version.mips.bands) * n_trees,
        first_search_k=k,
        # An exact head past the catalogue is the exact scan: nothing to measure.
        # Factor 0: the exact head alone, no band searched after it (on long-tailed norms the
        # answers of nearly every user are there, and a scan of 10k contiguous rows beats any
        # band search).
        groups=[
            (head, factor)
            for head in [h for h in banded.EXACT_HEADS if h < len(items)] or [len(items)]
            for factor in (HEAD_ONLY, *banded.BOUND_FACTORS)
        ],
        target=target,
    )


def _filtered_similar(
    version: VersionSearch, served: IndexQuality, rows: Rows, k: int
) -> tuple[FilteredAsk, FilteredAsk]:
    """item -> items filtered: (the index path of the served plan, the exact path)."""
    ann = version.with_plan(ServingPlan(similar=replace(similar_plan(served), **_ANN_ONLY)))
    exact = version.with_plan(ServingPlan(similar=SimilarPlan("exact")))
    return (
        lambda q, keep: ann.similar_items(int(rows[q]), k, keep)[0],
        lambda q, keep: exact.similar_items(int(rows[q]), k, keep)[0],
    )


def _filtered_recommend(
    version: VersionSearch, served: IndexQuality, users: FloatArray, k: int
) -> tuple[FilteredAsk, FilteredAsk]:
    """user -> items filtered: (the index path of the served plan, the exact path)."""
    ann = version.with_plan(ServingPlan(recommend=replace(recommend_plan(served), **_ANN_ONLY)))
    exact = version.with_plan(ServingPlan(recommend=RecommendPlan("exact")))
    return (
        lambda q, keep: ann.recommend(users[q], k, keep)[0],
        lambda q, keep: exact.recommend(users[q], k, keep)[0],
    )


def _with_filter_plan(
    label: str,
    quality: IndexQuality,
    ann: FilteredAsk,
    exact: FilteredAsk,
    n_items: int,
    n_queries: int,
    target: float,
    rng: np.random.Generator,
) -> IndexQuality:
    """The filter threshold: the lowest selectivity from which up, at every measured one, the
    index path (widening over-fetch) reaches the target recall (the 95% lower bound of its
    mean) and beats the exact path. Below it, and whenever the version serves by exact scans,
    filters are scored exactly. Each selectivity starts with a pilot of FILTER_PILOT queries; a
    point measured on the pilot alone is one where the index path was clearly slower."""
    if quality.strategy == "exact":
        return quality.model_copy(update={"filter_threshold": 1.0})
    curve: list[FilterPoint] = []
    threshold = 1.0
    queries = np.arange(n_queries)
    for selectivity in progress_bar(FILTER_SELECTIVITIES, desc=f"filters {label}", leave=False):
        size = round(selectivity * n_items)
        if size < 2 * search.TUNED_K:
            break  # a handful of items: exact-over-subset is the only sensible plan
        rows = np.sort(rng.choice(n_items, size, replace=False))
        # A pilot first: where the index path is clearly slower (item -> items at 1M: 11 q/s
        # against 20 for the exact path at 50%), 100 queries of each would only spend ~12 s of
        # the build confirming it.
        pilot, rest = queries[:FILTER_PILOT], queries[FILTER_PILOT:]
        truth, exact_qps = _timed_answers(exact, n_items, rows, pilot)
        found, ann_qps = _timed_answers(ann, n_items, rows, pilot)
        if ann_qps >= exact_qps * PILOT_MARGIN and len(rest):
            more_truth, rest_exact_qps = _timed_answers(exact, n_items, rows, rest)
            more_found, rest_ann_qps = _timed_answers(ann, n_items, rows, rest)
            truth, found = {**truth, **more_truth}, {**found, **more_found}
            exact_qps = _combined_qps((len(pilot), exact_qps), (len(rest), rest_exact_qps))
            ann_qps = _combined_qps((len(pilot), ann_qps), (len(rest), rest_ann_qps))
        # Not the mean alone: its 95% lower bound must reach the target (100 queries leave
        # about +-0.01 of noise, and a threshold set on a lucky draw would miss it in service).
        recall, lower = _mean_and_low([recall_at_k(found[q], truth[q]) for q in truth])
        curve.append(
            FilterPoint(
                selectivity=selectivity,
                ann_recall_at_k=recall,
                ann_queries_per_s=ann_qps,
                exact_queries_per_s=exact_qps,
            )
        )
        if lower < target or ann_qps < exact_qps:
            break  # from here down, the exact path wins
        threshold = selectivity
    return quality.model_copy(update={"filter_curve": curve, "filter_threshold": threshold})


def _index_quality(
    label: str,
    plan_at: PlanAt,
    ask: Ask,
    brute: Callable[[int], object],
    exact: VersionSearch,
    truth: npt.NDArray[np.int64],
    *,
    search_k_limit: int,
    first_search_k: int,
    groups: list[Group],
    target: float,
) -> IndexQuality:
    """Each point is `ask` through the plan `plan_at(search_k, group)`, compared with `brute`, the
    plain scan; `exact` is the version under the `exact` strategy, served when no point wins."""
    half = len(truth) // 2
    tuning, heldout = np.arange(half), np.arange(half, len(truth))
    brute_qps = _queries_per_s(brute, tuning[: min(50, half)])
    curve: list[SearchKPoint] = []
    with progress_bar(desc=f"quality {label}", unit="point", leave=False) as bar:
        for group in groups:
            search_k = first_search_k
            while True:
                point = _point(plan_at(search_k, group), ask, truth, tuning, search_k, group)
                curve.append(point)
                bar.update(1)
                # A tuning point, not what is served: named so it cannot pass for the report's
                # recall (the log line `quality_measured` has that).
                bar.set_postfix(
                    search_k=search_k,
                    head=group[0],
                    point_recall=f"{point.recall_at_k:.3f}",
                    vs_scan=f"{point.queries_per_s / brute_qps:.1f}x",
                )
                if _wins(point, target, brute_qps) or point.queries_per_s < brute_qps:
                    break  # the answer for this head is known: this point, or not at all
                if group[1] == HEAD_ONLY:
                    break  # no band is searched: search_k changes nothing
                if point.recall_at_k >= STOP_RECALL or search_k >= search_k_limit:
                    break
                search_k *= 2
    winning = [p for p in curve if _wins(p, target, brute_qps)]
    if winning:
        best = max(winning, key=lambda p: p.queries_per_s)
        group = (best.exact_items, best.bound_factor)
        final = _point(plan_at(best.search_k, group), ask, truth, heldout, best.search_k, group)
        strategy: Literal["ann", "exact"] = "ann"
        served_recall, served_qps = final.recall_at_k, final.queries_per_s
        served_low = final.recall_low
    else:
        # The index cannot reach the target faster than scanning everything: scan (exact).
        best = max(curve, key=lambda p: p.recall_at_k)
        strategy, served_recall, served_low = "exact", 1.0, 1.0
        served_qps = _queries_per_s(lambda q: ask(exact, q), heldout[: min(50, len(heldout))])
    return IndexQuality(
        strategy=strategy,
        tuning_queries=len(tuning),
        curve=curve,
        search_k=best.search_k,
        exact_items=best.exact_items,
        bound_factor=best.bound_factor,
        reached_target=bool(winning),
        heldout_queries=len(heldout),
        recall_at_k=served_recall,
        recall_low=served_low,
        queries_per_s=served_qps,
        brute_force_queries_per_s=brute_qps,
    )


def _timed_answers(
    ask: FilteredAsk,
    n_items: int,
    rows: npt.NDArray[np.int64],
    queries: npt.NDArray[np.int64],
) -> tuple[dict[int, npt.NDArray[np.int64]], float]:
    found: dict[int, npt.NDArray[np.int64]] = {}

    def run(q: int) -> None:
        # A fresh selection per query, as per request: nothing it caches (a mask) carries over.
        found[q] = ask(q, Selection.of_rows(n_items, rows))

    return found, _queries_per_s(run, queries)


def _combined_qps(*parts: tuple[int, float]) -> float:
    """Queries per second over several timed runs of (queries, queries per second)."""
    return sum(n for n, _ in parts) / sum(n / qps for n, qps in parts)


def _wins(point: SearchKPoint, target: float, brute_qps: float) -> bool:
    """Reaches the target recall and beats the exact scan."""
    return point.recall_at_k >= target and point.queries_per_s >= brute_qps


def _point(
    version: VersionSearch,
    ask: Ask,
    truth: npt.NDArray[np.int64],
    queries: npt.NDArray[np.int64],
    search_k: int,
    group: Group,
) -> SearchKPoint:
    found: dict[int, npt.NDArray[np.int64]] = {}

    def run(q: int) -> None:
        found[q] = ask(version, q)

    qps = _queries_per_s(run, queries)
    recall, low = _mean_and_low([recall_at_k(found[q], truth[q]) for q in queries.tolist()])
    return SearchKPoint(
        search_k=search_k,
        exact_items=group[0],
        bound_factor=group[1],
        recall_at_k=recall,
        recall_low=low,
        queries_per_s=qps,
    )


def _mean_and_low(recalls: list[float]) -> tuple[float, float]:
    """Mean recall and its 95% lower bound (mean - 2 standard errors): with 100-200 queries the
    mean alone is +-0.01, which is the difference between meeting a target and missing it."""
    values = np.asarray(recalls, dtype=np.float64)
    mean = float(values.mean())
    return mean, mean - 2 * float(values.std()) / math.sqrt(len(values))


def _queries_per_s(fn: Callable[[int], object], queries: npt.NDArray[np.int64]) -> float:
    """Queries per second of `fn` one query at a time: 1 / the median query's time. Not the
    total: a plan's 200 queries take 5-10 ms, and one time slice lost to another process moved
    its mean enough to rank plans wrongly (a 1M report timed an exact head of 10,752 rows at
    36k q/s and one of 2,560 at 22k, and served the larger)."""
    if not len(queries):
        return 0.0
    fn(int(queries[0]))  # untimed: a path's first call faults pages in and fills caches
    times = np.empty(len(queries))
    for i, q in enumerate(queries.tolist()):
        start = time.perf_counter()
        fn(q)
        times[i] = time.perf_counter() - start
    return 1.0 / max(float(np.median(times)), 1e-9)


def _exact(
    items: FloatArray, queries: FloatArray, k: int, exclude: npt.NDArray[np.int64] | None = None
) -> npt.NDArray[np.int64]:
    """Exact top-k for many queries: blocked GEMM (ground truth, not timed: on every core, where
    the timed searches around it run on one)."""
    out = np.empty((len(queries), min(k, len(items))), dtype=np.int64)
    with threadpool_limits(os.cpu_count() or 1, user_api="blas"):
        for start in range(0, len(queries), 256):
            scores = queries[start : start + 256] @ items.T
            for j, row in enumerate(scores):
                if exclude is not None:
                    row[exclude[start + j]] = -np.inf
                out[start + j] = top_k(row, k)
    return out


def _sample(rng: np.random.Generator, n: int, size: int) -> npt.NDArray[np.int64]:
    return rng.choice(n, size=min(n, size), replace=False).astype(np.int64)
