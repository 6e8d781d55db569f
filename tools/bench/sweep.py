"""The measuring loop of `annrec bench ann`, shared by every method so none is timed differently.

recall@K is averaged over every query of a task; queries/s is measured on a fixed prefix of them,
one query at a time (BLAS pinning is the caller's), after a few untimed warm-up queries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from index_builder.progress import progress_bar
from query_engine.vectors import recall_at_k, top_k

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
Param = dict[str, int]
Answer = Callable[[int], IntArray]  # query number -> found item rows, best first

K = 10
BATCH = 256  # queries per GEMM: ground truth and the batched brute force
STOP_RECALL = 0.995  # past this, a larger grid point buys nothing worth measuring
PLATEAU = 0.002  # with stop_on_plateau: a point adding less recall than this ends its group
WARMUP = 5  # untimed queries before each timed run: first-touch page faults are not the method


@dataclass(frozen=True)
class Task:
    name: str  # "item->items" or "user->items"
    metric: Literal["cosine", "inner_product"]
    vectors: FloatArray  # one query vector per query (unit item vectors for cosine)
    rows: IntArray | None  # item->items: the queried item rows, never part of an answer
    truth: IntArray  # exact top-K item rows per query
    truth_s: float  # what computing the ground truth took (not a method: not compared)
    timed: int  # queries/s is measured on the first `timed` queries

    def drop_self(self, q: int, found: IntArray) -> IntArray:
        """Results asked for K + 1 by an item's own vector: the item itself removed, K left."""
        return found if self.rows is None else found[found != self.rows[q]][:K]


def exact_top_k(
    matrix: FloatArray,
    queries: FloatArray,
    k: int,
    exclude: IntArray | None = None,
    desc: str | None = None,
) -> IntArray:
    """Exact top-k rows of `matrix` per query: one GEMM per BATCH queries, then top_k per row;
    `exclude[i]` is never an answer to query i. The ground truth, and, timed, the batched
    brute force."""
    out = np.empty((len(queries), min(k, len(matrix))), dtype=np.int64)
    starts = range(0, len(queries), BATCH)
    for start in progress_bar(starts, desc=desc, unit="batch", leave=False, hidden=desc is None):
        scores = queries[start : start + BATCH] @ matrix.T
        if exclude is not None:
            scores[np.arange(len(scores)), exclude[start : start + BATCH]] = -np.inf
        for j, row in enumerate(scores):
            out[start + j] = top_k(row, k)
    return out


def search_k_grid(n_candidates: int, n_items: int) -> list[int]:
    """As the quality report: the candidate count, doubled up to the first value >= n_items."""
    grid = [n_candidates]
    while grid[-1] < n_items:
        grid.append(grid[-1] * 2)
    return grid


def measure(task: Task, answer: Answer) -> tuple[float, float]:
    """(recall@K over all queries, queries/s over the first task.timed, one at a time)."""
    for q in range(min(WARMUP, len(task.truth))):
        answer(q)
    found: list[IntArray] = []
    start = time.perf_counter()
    for q in range(task.timed):
        found.append(answer(q))
    elapsed = time.perf_counter() - start
    found.extend(answer(q) for q in range(task.timed, len(task.truth)))
    return mean_recall(found, task.truth), task.timed / max(elapsed, 1e-9)


def sweep(
    label: str,
    task: Task,
    grid: list[list[Param]],
    answer_for: Callable[[Param], Answer],
    stop_on_plateau: bool = False,
    floor_qps: float = 0.0,
    every_group: bool = False,
) -> list[dict[str, Any]]:
    """Measure grid points in order. A group (cheapest first) stops once recall reaches
    STOP_RECALL (or, with stop_on_plateau, once a point adds less than PLATEAU; or once a point
    is slower than `floor_qps`, the exact scan), and the sweep stops after a group that reached
    STOP_RECALL: later groups only cost more (unless every_group: groups that are not ordered by
    cost, such as the bound factors of the norm bands, are all measured)."""
    points: list[dict[str, Any]] = []
    with progress_bar(total=sum(map(len, grid)), desc=label, unit="point", leave=False) as bar:
        for group in grid:
            previous = -1.0
            for param in group:
                recall, qps = measure(task, answer_for(param))
                points.append(point(param, recall, qps))
                bar.update(1)
                bar.set_postfix(param=param, recall=f"{recall:.3f}", qps=f"{qps:.0f}")
                if (
                    recall >= STOP_RECALL
                    or (stop_on_plateau and recall - previous < PLATEAU)
                    or qps < floor_qps
                ):
                    break
                previous = recall
            if not every_group and points and points[-1]["recall_at_10"] >= STOP_RECALL:
                break
    return points


def method_entry(name: str, label: str, build_s: float, index_bytes: int) -> dict[str, Any]:
    """A method's record in ann.json, before its settings and points."""
    return {"name": name, "label": label, "build_s": round(build_s, 3), "index_bytes": index_bytes}


def mean_recall(found: list[IntArray] | IntArray, truth: IntArray) -> float:
    return float(np.mean([recall_at_k(f, t) for f, t in zip(found, truth, strict=True)]))


def point(param: Param, recall: float, qps: float) -> dict[str, Any]:
    return {"param": param, "recall_at_10": round(recall, 4), "queries_per_s": _significant(qps)}


def add_speedups(methods: list[dict[str, Any]], single_qps: float, batched_qps: float) -> None:
    for method in methods:
        for p in method["points"]:
            p["speedup_vs_single"] = _significant(p["queries_per_s"] / single_qps)
            p["speedup_vs_batched"] = _significant(p["queries_per_s"] / batched_qps)


def _significant(value: float) -> float:
    """Three significant figures: a slow point on a loaded machine (a speed-up of 0.004) must
    not round to 0, which reads as "never answered"."""
    return float(f"{value:.3g}")


def pareto(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points no other point beats on both recall and queries/s, by increasing recall."""
    front: list[dict[str, Any]] = []
    best_qps = -1.0
    for p in sorted(points, key=lambda p: (-p["recall_at_10"], -p["queries_per_s"])):
        if p["queries_per_s"] > best_qps:
            front.append(p)
            best_qps = p["queries_per_s"]
    return front[::-1]
