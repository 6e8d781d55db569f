"""The user -> items alternatives `annrec bench ann` measures beside what annrec publishes.

Issue 6 asked which Annoy-based method makes inner-product search both fast and accurate; each
one here is measured by the same sweep as everything else:

- `xbox`: one Annoy index over the whole catalogue, Bachrach-augmented with the global M (what
  versions before format 2 published), candidates over-fetched 10x and reranked exactly;
- `xbox, no over-fetch`: the same index asked for exactly k (does the rerank matter?);
- `exact head + xbox`: the highest-norm items scored exactly with one matrix product, merged
  with the xbox candidates for the rest;
- `angular + IP rerank`: candidates from the cosine (angular) index, reranked by inner product;
- `bands, T trees`: the published norm bands with another tree count (trees vs search_k).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from annoy import AnnoyIndex

from adapters.index_files import load_bands
from index_builder.build import build_annoy, build_mips_bands
from index_builder.inputs import Factors
from query_engine import banded, search
from query_engine.vectors import augment_items, augment_query, top_k
from tools.bench.sweep import (
    Answer,
    IntArray,
    K,
    Param,
    Task,
    method_entry,
    search_k_grid,
    sweep,
)

XBOX_HEAD = 2048  # exact head of `exact head + xbox`: the default exact head of the bands
SEED = 42


def measure_variants(
    task: Task,
    factors: Factors,
    tmp: Path,
    n_trees: int,
    band_trees: list[int],
    floor_qps: float,
) -> list[dict[str, Any]]:
    """Every alternative above on one user -> items task. `floor_qps` (single-query brute force)
    ends a curve: a bigger budget only gets slower."""
    items = factors.item_factors
    methods = _xbox(task, items, tmp, n_trees, floor_qps)
    methods.append(_angular_rerank(task, items, tmp, n_trees, floor_qps))
    for trees in band_trees:
        methods.append(measure_bands(task, items, tmp, trees, f"bands_{trees}t", floor_qps))
    return methods


def measure_bands(
    task: Task, items: np.ndarray, tmp: Path, trees: int, name: str, floor_qps: float
) -> dict[str, Any]:
    """The norm bands as publish_version builds them, queried as a worker queries them."""
    directory = tmp / name
    directory.mkdir()
    start = time.perf_counter()
    spec = build_mips_bands(items, directory, n_trees=trees, seed=SEED)
    build_s = time.perf_counter() - start
    bands = load_bands(directory, spec, items, prefault=True)
    size = sum(p.stat().st_size for p in directory.iterdir())

    def answer_for(param: Param) -> Answer:
        sk, head = param["search_k"], param["exact_items"]
        factor = param["bound_factor_pct"] / 100
        return lambda q: banded.max_inner_product(bands, task.vectors[q], K, sk, head, factor)[0]

    heads = [h for h in banded.EXACT_HEADS if h < len(items)] or [len(items)]
    grid = [
        [
            {"exact_items": h, "bound_factor_pct": round(f * 100), "search_k": sk}
            for sk in _doubling(K, 20_000)
        ]
        for h in heads
        for f in banded.BOUND_FACTORS
    ]
    label = "annrec (norm bands)" if name == "annrec" else f"bands, {trees} trees"
    method = method_entry(name, label, build_s, size)
    method["settings"] = {
        "n_trees_per_band": trees,
        "bands": [[b.start, b.stop] for b in spec.bands],
        "first_band": banded.FIRST_BAND,
        "growth": banded.BAND_GROWTH,
        "candidates_per_band": K * banded.BAND_OVERFETCH,
    }
    method["points"] = sweep(
        f"{label} {task.name}", task, grid, answer_for, floor_qps=floor_qps, every_group=True
    )
    bands.unload()
    shutil.rmtree(directory)
    return method


def _xbox(
    task: Task, items: np.ndarray, tmp: Path, n_trees: int, floor_qps: float
) -> list[dict[str, Any]]:
    path = tmp / "xbox.ann"
    start = time.perf_counter()
    augmented, _ = augment_items(items)
    build_annoy(augmented, path, metric="angular", n_trees=n_trees, seed=SEED, label="xbox")
    build_s = time.perf_counter() - start
    del augmented
    index = AnnoyIndex(int(items.shape[1]) + 1, "angular")
    index.load(str(path), prefault=True)
    size = path.stat().st_size
    order, _ = banded.norm_order(items)
    head_rows = np.sort(order[:XBOX_HEAD]).astype(np.int64)
    head = np.ascontiguousarray(items[head_rows])

    def overfetch(sk: int) -> Answer:
        return lambda q: xbox_max_inner_product(index, items, task.vectors[q], K, sk)[0]

    def exactly_k(sk: int) -> Answer:
        return lambda q: np.asarray(
            index.get_nns_by_vector(augment_query(task.vectors[q]), K, sk), dtype=np.int64
        )

    def head_plus(sk: int) -> Answer:
        def answer(q: int) -> IntArray:
            query = task.vectors[q]
            rows = np.concatenate(
                [head_rows, xbox_max_inner_product(index, items, query, K, sk)[0]]
            )
            scores = np.concatenate([head @ query, items[rows[len(head_rows) :]] @ query])
            return _unique_top(rows, scores)

        return answer

    grid = [[{"search_k": sk} for sk in search_k_grid(K * search.OVERFETCH, len(items))]]
    methods = []
    for name, label, make in (
        ("xbox", f"xbox, {n_trees} trees, 10x rerank", overfetch),
        ("xbox_k", f"xbox, {n_trees} trees, k only", exactly_k),
        ("head_xbox", f"exact head {XBOX_HEAD} + xbox", head_plus),
    ):
        method = method_entry(name, label, build_s, size)
        method["settings"] = {"n_trees": n_trees, "index": "one index, global M"}
        method["points"] = sweep(
            f"{label} {task.name}", task, grid, _by_search_k(make), floor_qps=floor_qps
        )
        methods.append(method)
    index.unload()
    path.unlink()
    return methods


def _angular_rerank(
    task: Task, items: np.ndarray, tmp: Path, n_trees: int, floor_qps: float
) -> dict[str, Any]:
    path = tmp / "angular.ann"
    start = time.perf_counter()
    build_annoy(items, path, metric="angular", n_trees=n_trees, seed=SEED, label="angular")
    build_s = time.perf_counter() - start
    index = AnnoyIndex(int(items.shape[1]), "angular")
    index.load(str(path), prefault=True)

    def make(sk: int) -> Answer:
        def answer(q: int) -> IntArray:
            query = task.vectors[q]
            rows = np.asarray(
                index.get_nns_by_vector(query, K * search.OVERFETCH, sk), dtype=np.int64
            )
            return rows[top_k(items[rows] @ query, K)]

        return answer

    grid = [[{"search_k": sk} for sk in search_k_grid(K * search.OVERFETCH, len(items))]]
    method = method_entry("angular_ip", f"angular {n_trees} trees + IP rerank", build_s, 0)
    method["index_bytes"] = path.stat().st_size
    method["settings"] = {"n_trees": n_trees, "candidates": K * search.OVERFETCH}
    method["points"] = sweep(
        f"angular+rerank {task.name}", task, grid, _by_search_k(make), floor_qps=floor_qps
    )
    index.unload()
    path.unlink()
    return method


def _by_search_k(make: Callable[[int], Answer]) -> Callable[[Param], Answer]:
    return lambda param: make(param["search_k"])


def _unique_top(rows: IntArray, scores: np.ndarray) -> IntArray:
    """Top K of rows that may repeat (the head is also in the index)."""
    rows, first = np.unique(rows, return_index=True)
    return rows[top_k(scores[first], K)]


def _doubling(start: int, stop: int) -> list[int]:
    values = [start]
    while values[-1] * 2 <= stop:
        values.append(values[-1] * 2)
    return values


def xbox_max_inner_product(
    index: AnnoyIndex,
    item_factors: npt.NDArray[np.float32],
    query: npt.NDArray[np.float32],
    k: int,
    search_k: int = -1,
) -> search.Ranked:
    """Items with the largest inner product with `query`, exact scores, best first, from one
    Xbox-augmented index over the whole catalogue (what annrec served before the norm bands).

    `index` holds the Bachrach-augmented items; the query gets the matching 0 appended.
    """
    n = min(len(item_factors), k * search.OVERFETCH)
    candidates = np.asarray(
        index.get_nns_by_vector(augment_query(query), n, search_k), dtype=np.int64
    )
    scores = (np.asarray(item_factors[candidates]) @ query).astype(np.float32)
    best = top_k(scores, k)
    return candidates[best], scores[best]
