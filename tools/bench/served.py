"""What a worker's answers cost and how good they are, per request, on a published version.

The quality report (index_builder/quality.py) times the core search of each plan; a worker does
more per request: id lookups, exclusions, the fill, building the reply. Here a version is loaded
exactly as a worker loads it (worker.index_store.load_version, warmed) and requests go through
worker.answer.answer one at a time on one thread, beside the exact scan of the same queries in
the same run, so the ratios hold on any machine. Recall is against exact brute force.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from index_builder.progress import progress_bar
from query_engine.vectors import recall_at_k
from schemas.events import RecommendRequest, SimilarItemsRequest
from schemas.layout import version_dir
from schemas.manifest import USER_IDS_FILE
from worker.answer import answer
from worker.index_store import LoadedVersion, load_version

Rows = npt.NDArray[np.int64]
SIMILAR_KS = (10, 50, 100)
# Queries measured one way after another before the next way (see _measure).
BLOCK = 50
T = TypeVar("T")  # 10: the table's lookup; 50 and 100: above its width (32)


def measure_served(
    storage: Path, version: str, n_queries: int = 300, seed: int = 0
) -> dict[str, Any]:
    """Per kind and k: recall@k, core search and answer() latency (median, p99, mean) and the
    exact scan's, with the ratios of their medians."""
    v = load_version(storage, version, warm=True)
    user_ids = np.load(version_dir(storage, version) / USER_IDS_FILE, allow_pickle=False)
    try:
        rng = np.random.default_rng(seed)
        items = rng.choice(v.manifest.n_items, min(n_queries, v.manifest.n_items), replace=False)
        users = rng.choice(v.manifest.n_users, min(n_queries, v.manifest.n_users), replace=False)
        results: dict[str, Any] = {}
        with threadpool_limits(1, user_api="blas"):
            for k in [k for k in SIMILAR_KS if k < v.manifest.n_items]:
                results[f"similar_items k={k}"] = _measure_similar(v, items, k)
            if len(users):
                results["recommend k=10"] = _measure(
                    v,
                    users,
                    10,
                    lambda row: RecommendRequest(request_id="b", user_id=str(user_ids[row]), k=10),
                    core=lambda row: v.search.recommend(np.asarray(v.user_factors[row]), 10)[0],
                    exact=lambda row: v.search.recommend(
                        np.asarray(v.user_factors[row]), 10, exact=True
                    )[0],
                )
        return results
    finally:
        v.close()


def _measure_similar(v: LoadedVersion, rows: Rows, k: int) -> dict[str, Any]:
    def request(row: int) -> SimilarItemsRequest:
        return SimilarItemsRequest(request_id="b", item_id=str(v.item_ids[row]), k=k)

    # The search never returns the item itself: k is what answer() asks of it.
    return _measure(
        v,
        rows,
        k,
        request,
        core=lambda row: v.search.similar_items(row, k)[0],
        exact=lambda row: v.search.similar_items(row, k, exact=True)[0],
    )


def _measure(
    v: LoadedVersion,
    rows: Rows,
    k: int,
    request: Callable[[int], SimilarItemsRequest | RecommendRequest],
    core: Callable[[int], Rows],
    exact: Callable[[int], Rows],
) -> dict[str, Any]:
    """Each query three ways, in blocks of BLOCK queries so that drift in the machine's load
    hits all alike: the exact scans of a block (the truth), then its core searches, then its
    whole answer()s. Blocks, not query by query: a scan reads every factor and leaves the
    caches cold, which a worker's searches (never beside a scan) do not see; query by query,
    each core search ran cold and the answer() after it warm, on the same query."""
    timings: dict[str, list[float]] = {"exact": [], "core": [], "answer": []}
    recalls = []
    first = int(rows[0])  # untimed: first calls fault pages in and fill caches
    exact(first), core(first), answer(request(first), v, "bench")
    with progress_bar(total=len(rows), desc=f"answers k={k}", unit="query", leave=False) as bar:
        for start_at in range(0, len(rows), BLOCK):
            block = rows[start_at : start_at + BLOCK].tolist()
            truths = [_timed(timings["exact"], exact, row)[:k] for row in block]
            for row in block:
                _timed(timings["core"], core, row)
            asked = [request(row) for row in block]
            replies = [_timed(timings["answer"], lambda a: answer(a, v, "bench"), a) for a in asked]
            for truth, reply in zip(truths, replies, strict=True):
                found = np.array([v.item_rows[item.item_id] for item in reply.items], np.int64)
                recalls.append(recall_at_k(found, truth))
            bar.update(len(block))
    figures = {name: _latency(values) for name, values in timings.items()}
    # Ratios of medians: on a shared machine a preempted query lands in the mean, not the median.
    exact_p50 = figures["exact"]["p50_us"]
    return {
        "queries": len(rows),
        "recall_at_k": round(float(np.mean(recalls)), 4),
        **{f"{name}_us": f for name, f in figures.items()},
        "core_vs_exact": _ratio(exact_p50, figures["core"]["p50_us"]),
        "answer_vs_exact": _ratio(exact_p50, figures["answer"]["p50_us"]),
    }


def _ratio(a: float, b: float) -> float:
    # Three significant digits: one decimal place rounded a small catalogue's 0.04 to 0.0.
    return float(f"{a / b:.3g}")


def _timed(into: list[float], call: Callable[[Any], T], arg: Any) -> T:
    start = time.perf_counter()
    out = call(arg)
    into.append(time.perf_counter() - start)
    return out


def _latency(values_s: list[float]) -> dict[str, float]:
    a = np.asarray(values_s) * 1e6
    return {
        "p50_us": round(float(np.percentile(a, 50)), 1),
        "p99_us": round(float(np.percentile(a, 99)), 1),
        "mean_us": round(float(a.mean()), 1),
    }
