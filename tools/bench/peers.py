"""Other ANN libraries for `annrec bench ann`, behind one small interface.

Each adapter builds an index over item vectors for one metric and answers one query at a time for
one point of its parameter grid. Sweeping the grid, timing and recall are the benchmark's job
(tools/bench/ann.py), so every method is measured by the same loop. The libraries are the optional
extra `annrec[bench]`: a missing or broken one is reported as unavailable, never an error.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from query_engine.vectors import unit_rows

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
Metric = Literal["cosine", "inner_product"]
Param = dict[str, int]  # one grid point, e.g. {"ef": 64}
# (grid point, query vector, number of results) -> item rows, best first
Search = Callable[[Param, FloatArray, int], IntArray]

HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200
HNSW_EF = (16, 32, 64, 128, 256, 512, 1024)
# ScaNN's README: ~sqrt(n) leaves, a few percent of them searched, AH(2, 0.2), reorder. The grid
# goes on to every leaf, so the curve shows where the partition stops limiting recall.
SCANN_LEAF_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
SCANN_REORDER = (25, 50, 100, 250, 500)
SCANN_TRAINING_SAMPLE = 250_000


@dataclass
class Built:
    """An index ready to query, and what it cost."""

    build_s: float
    index_bytes: int
    # Groups of grid points, each group cheapest first: a sweep stops a group once recall is
    # high enough, and stops altogether after a group that got there.
    grid: list[list[Param]]
    search: Search
    settings: dict[str, Any]
    # Also end a group when a point adds no recall: more reordering cannot find what the
    # searched leaves do not hold.
    stop_on_plateau: bool = False


@dataclass(frozen=True)
class Peer:
    name: str
    package: str  # the PyPI distribution, for its version
    build: Callable[[FloatArray, Metric, int], Built]  # (items, metric, seed)


def available(peer: Peer) -> tuple[bool, str]:
    """(usable, version or the reason it is not), importing the library once."""
    try:
        import_module(peer.package)
    except Exception as exc:  # an ImportError, or a wheel that loads but breaks on import
        return False, f"not importable ({type(exc).__name__}: {exc}); pip install 'annrec[bench]'"
    try:
        return True, version(peer.package)
    except PackageNotFoundError:
        return True, "unknown"


def _build_hnswlib(items: FloatArray, metric: Metric, seed: int) -> Built:
    hnswlib = import_module("hnswlib")
    # "cosine" normalizes items and queries itself; "ip" is the raw inner product (1 - x.q).
    space = "cosine" if metric == "cosine" else "ip"
    start = time.perf_counter()
    index = hnswlib.Index(space=space, dim=int(items.shape[1]))
    index.init_index(
        max_elements=len(items), M=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION, random_seed=seed
    )
    index.add_items(items, np.arange(len(items)), num_threads=os.cpu_count() or 1)
    build_s = time.perf_counter() - start
    index.set_num_threads(1)  # searches are timed one query at a time on one thread
    with tempfile.TemporaryDirectory(prefix="annrec-hnsw-") as tmp:
        path = Path(tmp) / "index.bin"
        index.save_index(str(path))
        size = path.stat().st_size

    def search(param: Param, query: FloatArray, n: int) -> IntArray:
        index.set_ef(max(param["ef"], n))
        labels, _ = index.knn_query(query, k=n, num_threads=1)
        return labels[0].astype(np.int64)

    return Built(
        build_s=build_s,
        index_bytes=size,
        grid=[[{"ef": ef} for ef in HNSW_EF]],
        search=search,
        settings={"space": space, "M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION},
    )


def _build_scann(items: FloatArray, metric: Metric, seed: int) -> Built:
    scann = import_module("scann")
    n = len(items)
    # Cosine = dot product on unit vectors (the README's recipe for angular data).
    data = unit_rows(items) if metric == "cosine" else np.ascontiguousarray(items, dtype=np.float32)
    num_leaves = max(1, round(math.sqrt(n)))
    leaves = sorted({max(1, round(num_leaves * f)) for f in SCANN_LEAF_FRACTIONS})
    reorder = max(SCANN_REORDER)
    start = time.perf_counter()
    builder = (
        scann.scann_ops_pybind.builder(data, 10, "dot_product")
        .tree(
            num_leaves=num_leaves,
            num_leaves_to_search=leaves[0],
            training_sample_size=min(n, SCANN_TRAINING_SAMPLE),
        )
        .score_ah(2, anisotropic_quantization_threshold=0.2)
        .reorder(reorder)
        .set_n_training_threads(os.cpu_count() or 1)
    )
    searcher = builder.build()
    build_s = time.perf_counter() - start
    searcher.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="annrec-scann-") as tmp:
        searcher.serialize(tmp)
        size = sum(p.stat().st_size for p in Path(tmp).iterdir() if p.is_file())

    def search(param: Param, query: FloatArray, n_results: int) -> IntArray:
        q = unit_rows(query[None, :])[0] if metric == "cosine" else query
        rows, _ = searcher.search(
            q,
            final_num_neighbors=n_results,
            pre_reorder_num_neighbors=max(param["reorder"], n_results),
            leaves_to_search=param["leaves_to_search"],
        )
        return np.asarray(rows, dtype=np.int64)

    return Built(
        build_s=build_s,
        index_bytes=size,
        grid=[[{"leaves_to_search": lv, "reorder": r} for r in SCANN_REORDER] for lv in leaves],
        search=search,
        stop_on_plateau=True,
        settings={
            "distance": "dot_product" + (" on unit vectors" if metric == "cosine" else ""),
            "num_leaves": num_leaves,
            "training_sample_size": min(n, SCANN_TRAINING_SAMPLE),
            # 0.2 is the README's value for unit-norm data; the raw factors of user->items get
            # it too (as the brief asks), which may be what caps its recall on skewed norms.
            "score_ah": {"dims_per_block": 2, "anisotropic_quantization_threshold": 0.2},
            "seed": "n/a (ScaNN's builder takes none)",
        },
    )


PEERS = (
    Peer("hnswlib", "hnswlib", _build_hnswlib),
    Peer("scann", "scann", _build_scann),
)
