"""The quality report: recall@k against exact brute force over a grid of search_k, per index.

Queries are sampled from the version itself (items for item -> items, users for user -> items)
and split in two: the curve and the choice of search_k use the tuning half; the recall and
queries/s reported for the chosen search_k come from the held-out half, so the figure a worker
trusts was not fitted to the queries that measured it. Timings are one query at a time on one
thread (BLAS pinned to one thread), through query_engine.search, the same code the worker runs.

The strategy: the fastest point (search_k; for user -> items also the exact head of the norm
bands) that reaches the target recall while answering faster than the exact scan measured in the
same run; when none does, workers scan (exact, and faster than the index would be at that
recall). Each curve stops as soon as the answer is known.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Literal

import numpy as np
import numpy.typing as npt
from annoy import AnnoyIndex
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from index_builder.inputs import Factors
from query_engine import banded, filtered, search
from query_engine.selection import Selection
from query_engine.vectors import recall_at_k, top_k
from schemas.manifest import FilterPoint, IndexQuality, QualityReport, SearchKPoint

FloatArray = npt.NDArray[np.float32]
# One group of the curve: search_k doubles within it. For user -> items, (exact head, bound
# factor); (None, None) for item -> items.
Group = tuple[int | None, float | None]
# (query number, search_k, group) -> found item rows
Searcher = Callable[[int, int, Group], npt.NDArray[np.int64]]

STOP_RECALL = 0.995  # past this, more search_k buys nothing worth measuring
# Selectivities the filter threshold is searched over (random subsets of the catalogue), and
# the queries per selectivity (each costs one exact-over-subset scan and one index search).
FILTER_SELECTIVITIES = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)
FILTER_QUERIES = 100
# Queries of the pilot; the rest are measured unless the index path was slower than
# PILOT_MARGIN x the exact path on them (then it cannot win: the exact path serves).
FILTER_PILOT = 20
PILOT_MARGIN = 0.5


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
) -> QualityReport:
    rng = np.random.default_rng(seed)
    items = factors.item_factors
    norms = np.linalg.norm(items, axis=1).astype(np.float32)
    unit = items / np.where(norms > 0, norms, 1)[:, None]

    item_rows = _sample(rng, len(items), 2 * n_queries)
    # Without users in the version, item vectors stand in as user queries.
    users = factors.user_factors if len(factors.user_factors) >= 2 else items
    user_queries = users[_sample(rng, len(users), 2 * n_queries)]

    with threadpool_limits(1, user_api="blas"):
        sim_truth = _exact(unit, unit[item_rows], k, exclude=item_rows)
        rec_truth = _exact(items, user_queries, k)
        similar = _index_quality(
            "similar_items",
            lambda q, sk, _g: search.similar_items(angular, items, norms, int(item_rows[q]), k, sk)[
                0
            ],
            lambda q: _brute(unit, unit[item_rows[q]], k),
            None,
            sim_truth,
            search_k_limit=len(items) * n_trees,
            first_search_k=(k + 1) * search.OVERFETCH,
            groups=[(None, None)],
            target=target_recall,
        )
        recommend = _index_quality(
            "recommend",
            lambda q, sk, g: banded.max_inner_product(
                mips, user_queries[q], k, sk, g[0] or 0, g[1] or 1.0
            )[0],
            lambda q: _brute(items, user_queries[q], k),
            # Exact strategy: every band scanned exactly, stopping at the norm bound.
            lambda q: banded.max_inner_product(mips, user_queries[q], k, -1, len(items)),
            rec_truth,
            search_k_limit=max(b.stop - b.start for b in mips.bands) * n_trees,
            first_search_k=k,
            # An exact head past the catalogue is the exact scan: nothing to measure.
            groups=[
                (head, factor)
                for head in [h for h in banded.EXACT_HEADS if h < len(items)] or [len(items)]
                for factor in banded.BOUND_FACTORS
            ],
            target=target_recall,
        )
        # Filtered queries, at the strategy just chosen: where the planner switches to
        # exact-over-subset (query_engine/filtered.py). Each kind has its own query set (a small
        # catalogue or user table yields fewer than FILTER_QUERIES), so each is capped by it.
        similar = _with_filter_plan(
            "similar_items",
            similar,
            lambda q, keep: filtered.similar_items(
                angular, items, norms, int(item_rows[q]), k, keep, 0.0, similar.search_k
            )[0][0],
            lambda q, keep: filtered.exact_similar_items(items, norms, int(item_rows[q]), k, keep)[
                0
            ],
            len(items),
            min(len(item_rows), FILTER_QUERIES),
            target_recall,
            rng,
        )
        recommend = _with_filter_plan(
            "recommend",
            recommend,
            lambda q, keep: filtered.max_inner_product(
                mips,
                user_queries[q],
                k,
                keep,
                0.0,
                recommend.search_k,
                recommend.exact_items or 0,
                recommend.bound_factor or 1.0,
            )[0][0],
            lambda q, keep: filtered.exact_max_inner_product(mips, user_queries[q], k, keep)[0],
            len(items),
            min(len(user_queries), FILTER_QUERIES),
            target_recall,
            rng,
        )
    return QualityReport(
        k=k, target_recall=target_recall, similar_items=similar, recommend=recommend
    )


def _with_filter_plan(
    label: str,
    quality: IndexQuality,
    ann: Callable[[int, Selection], npt.NDArray[np.int64]],
    exact: Callable[[int, Selection], npt.NDArray[np.int64]],
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
    for selectivity in tqdm(FILTER_SELECTIVITIES, desc=f"filters {label}", leave=False):
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
        recalls = [recall_at_k(found[q], truth[q]) for q in truth]
        recall = float(np.mean(recalls))
        # Not the mean alone: its 95% lower bound must reach the target (100 queries leave
        # about +-0.01 of noise, and a threshold set on a lucky draw would miss it in service).
        lower = recall - 2 * float(np.std(recalls)) / math.sqrt(len(recalls))
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
    searcher: Searcher,
    brute: Callable[[int], object],
    exact: Callable[[int], object] | None,
    truth: npt.NDArray[np.int64],
    *,
    search_k_limit: int,
    first_search_k: int,
    groups: list[Group],
    target: float,
) -> IndexQuality:
    """`brute` is the plain scan every point is compared with; `exact`, when given, is what the
    `exact` strategy serves instead of it."""
    half = len(truth) // 2
    tuning, heldout = np.arange(half), np.arange(half, len(truth))
    brute_qps = _queries_per_s(brute, tuning[: min(50, half)])
    curve: list[SearchKPoint] = []
    with tqdm(desc=f"quality {label}", unit="point", leave=False) as bar:
        for group in groups:
            search_k = first_search_k
            while True:
                point = _point(searcher, truth, tuning, search_k, group)
                curve.append(point)
                bar.update(1)
                bar.set_postfix(search_k=search_k, group=group, recall=f"{point.recall_at_k:.3f}")
                if _wins(point, target, brute_qps) or point.queries_per_s < brute_qps:
                    break  # the answer for this head is known: this point, or not at all
                if point.recall_at_k >= STOP_RECALL or search_k >= search_k_limit:
                    break
                search_k *= 2
    winning = [p for p in curve if _wins(p, target, brute_qps)]
    if winning:
        best = max(winning, key=lambda p: p.queries_per_s)
        final = _point(
            searcher, truth, heldout, best.search_k, (best.exact_items, best.bound_factor)
        )
        strategy: Literal["ann", "exact"] = "ann"
        served_recall, served_qps = final.recall_at_k, final.queries_per_s
    else:
        # The index cannot reach the target faster than scanning everything: scan (exact).
        best = max(curve, key=lambda p: p.recall_at_k)
        strategy, served_recall = "exact", 1.0
        served_qps = _queries_per_s(exact or brute, heldout[: min(50, len(heldout))])
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
        queries_per_s=served_qps,
        brute_force_queries_per_s=brute_qps,
    )


def _timed_answers(
    fn: Callable[[int, Selection], npt.NDArray[np.int64]],
    n_items: int,
    rows: npt.NDArray[np.int64],
    queries: npt.NDArray[np.int64],
) -> tuple[dict[int, npt.NDArray[np.int64]], float]:
    found: dict[int, npt.NDArray[np.int64]] = {}

    def run(q: int) -> None:
        # A fresh selection per query, as per request: nothing it caches (a mask) carries over.
        found[q] = fn(q, Selection.of_rows(n_items, rows))

    return found, _queries_per_s(run, queries)


def _combined_qps(*parts: tuple[int, float]) -> float:
    """Queries per second over several timed runs of (queries, queries per second)."""
    return sum(n for n, _ in parts) / sum(n / qps for n, qps in parts)


def _wins(point: SearchKPoint, target: float, brute_qps: float) -> bool:
    """Reaches the target recall and beats the exact scan."""
    return point.recall_at_k >= target and point.queries_per_s >= brute_qps


def _point(
    searcher: Searcher,
    truth: npt.NDArray[np.int64],
    queries: npt.NDArray[np.int64],
    search_k: int,
    group: Group,
) -> SearchKPoint:
    found: dict[int, npt.NDArray[np.int64]] = {}

    def run(q: int) -> None:
        found[q] = searcher(q, search_k, group)

    qps = _queries_per_s(run, queries)
    recall = float(np.mean([recall_at_k(found[q], truth[q]) for q in queries.tolist()]))
    return SearchKPoint(
        search_k=search_k,
        exact_items=group[0],
        bound_factor=group[1],
        recall_at_k=recall,
        queries_per_s=qps,
    )


def _queries_per_s(fn: Callable[[int], object], queries: npt.NDArray[np.int64]) -> float:
    start = time.perf_counter()
    for q in queries.tolist():
        fn(q)
    return len(queries) / max(time.perf_counter() - start, 1e-9)


def _brute(items: FloatArray, query: FloatArray, k: int) -> npt.NDArray[np.int64]:
    return top_k(items @ query, k)


def _exact(
    items: FloatArray, queries: FloatArray, k: int, exclude: npt.NDArray[np.int64] | None = None
) -> npt.NDArray[np.int64]:
    """Exact top-k for many queries: blocked GEMM (ground truth, not timed)."""
    out = np.empty((len(queries), min(k, len(items))), dtype=np.int64)
    for start in range(0, len(queries), 256):
        scores = queries[start : start + 256] @ items.T
        for j, row in enumerate(scores):
            if exclude is not None:
                row[exclude[start + j]] = -np.inf
            out[start + j] = top_k(row, k)
    return out


def _sample(rng: np.random.Generator, n: int, size: int) -> npt.NDArray[np.int64]:
    return rng.choice(n, size=min(n, size), replace=False).astype(np.int64)
