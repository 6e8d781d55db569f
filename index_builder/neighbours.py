"""The neighbour table of a version: every item's M nearest items by cosine, with exact scores.

Two ways to the kNN graph, by catalogue size:
- up to EXACT_GRAPH_MAX_ITEMS items, an exact blocked scan (seconds; nothing to compile);
- above, NN-descent (pynndescent, Dong et al. 2011): an approximate graph at recall@10 ~0.99 in
  about a minute and a half for 1M x 64 on 2 cores, where the exact graph would take an hour.
  Its first call in a process compiles (numba, ~15-25 s, cached on disk after that), which is
  why small catalogues do not use it.
Either way every row is rescored exactly from the factors and sorted, so a table's scores are
the cosines the worker's exact path computes.
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
import numpy.typing as npt
import structlog

from index_builder.progress import progress_bar
from query_engine.neighbours import NeighbourTable
from query_engine.vectors import unit_rows

log = structlog.get_logger(__name__)

Method = Literal["exact", "nndescent"]
# M: the k of nearly every "similar items" row (10-30 on a product page), with room for a few
# exclusions; larger k are served by two hops over the table, then by the angular index.
DEFAULT_WIDTH = 32
# The exact graph costs n^2 K: 30k items x 64 take ~5 s, about NN-descent's fixed cost.
EXACT_GRAPH_MAX_ITEMS = 30_000
# NN-descent keeps this many times the table's width while it searches, and the table keeps the
# best `width`: on 300k synthetic items x 64, 33 neighbours found the true top 10 at 0.952, 48 at
# 0.989 (more iterations or a smaller delta gave nothing), for about twice the time.
GRAPH_SLACK = 1.5
_EXACT_BLOCK = 2048
_RESCORE_BLOCK = 16_384


def build_neighbour_table(
    item_factors: npt.NDArray[np.float32],
    width: int = DEFAULT_WIDTH,
    *,
    seed: int = 0,
    n_jobs: int = -1,
    exact_max_items: int = EXACT_GRAPH_MAX_ITEMS,
) -> tuple[NeighbourTable, Method]:
    """(the table, how its graph was found). `width` is capped at n_items - 1."""
    factors = np.asarray(item_factors, dtype=np.float32)
    n = len(factors)
    width = max(0, min(width, n - 1))
    unit = unit_rows(factors).astype(np.float32)
    method: Method = "exact" if n <= exact_max_items else "nndescent"
    if width == 0:
        graph = np.empty((n, 0), np.int64)
    elif method == "exact":
        graph = _exact_graph(unit, width)
    else:
        graph = _nndescent_graph(unit, width, seed, n_jobs)
    return _rescored(factors, graph), method


def _exact_graph(unit: npt.NDArray[np.float32], width: int) -> npt.NDArray[np.int64]:
    n = len(unit)
    graph = np.empty((n, width), np.int64)
    starts = range(0, n, _EXACT_BLOCK)
    for start in progress_bar(starts, desc="neighbour table (exact)", unit="block", leave=False):
        stop = min(start + _EXACT_BLOCK, n)
        sims = unit[start:stop] @ unit.T
        sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # not its own neighbour
        graph[start:stop] = np.argpartition(-sims, width - 1, axis=1)[:, :width]
    return graph


def _nndescent_graph(
    unit: npt.NDArray[np.float32], width: int, seed: int, n_jobs: int
) -> npt.NDArray[np.int64]:
    # Imported here: numba's import alone costs ~1.5 s, which small builds never pay.
    from pynndescent import NNDescent

    n = len(unit)
    started = time.perf_counter()
    with progress_bar(total=1, desc="neighbour table (NN-descent)", leave=False) as bar:
        # "dot" on unit rows is cosine without pynndescent normalising a copy; low_memory and
        # compressed: the graph is all a version keeps, not pynndescent's search structures.
        searched = max(width + 1, round(width * GRAPH_SLACK))
        found = NNDescent(
            unit,
            metric="dot",
            n_neighbors=min(searched, n - 1) + 1,  # each item finds itself first
            random_state=seed,
            n_jobs=n_jobs,
            low_memory=True,
            compressed=True,
        )
        graph = np.asarray(found.neighbor_graph[0], dtype=np.int64)
        bar.update(1)
    graph = _without_self(graph)[:, :width]
    # An item NN-descent left short (-1 slots: a duplicate-heavy region) gets its row scanned.
    short = np.flatnonzero((graph < 0).any(axis=1))
    for row in short:
        sims = unit @ unit[row]
        sims[row] = -np.inf
        graph[row] = np.argpartition(-sims, width - 1)[:width]
    log.info(
        "neighbour_graph_built",
        method="nndescent",
        n_items=n,
        width=width,
        rows_rescanned=len(short),
        seconds=round(time.perf_counter() - started, 1),
    )
    return graph


def _without_self(graph: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """One column fewer, best first: each row without the item itself, or without its farthest
    neighbour when the graph missed the item (duplicates of an item can outrank it)."""
    n, found = graph.shape
    keep = graph != np.arange(n)[:, None]
    missing_self = keep.all(axis=1)
    keep[missing_self, -1] = False
    return graph[keep].reshape(n, found - 1)


def _rescored(factors: npt.NDArray[np.float32], graph: npt.NDArray[np.int64]) -> NeighbourTable:
    """Exact cosine of every (item, neighbour) pair, the row sorted best first: the same
    scores as query_engine.vectors.cosine_scores, so a table answer equals the exact path's."""
    n, width = graph.shape
    norms = np.linalg.norm(factors, axis=1).astype(np.float32)
    rows = np.empty((n, width), np.int32)
    scores = np.empty((n, width), np.float32)
    for start in range(0, n, _RESCORE_BLOCK):
        stop = min(start + _RESCORE_BLOCK, n)
        cand = graph[start:stop]
        dots = np.einsum("bwk,bk->bw", factors[cand], factors[start:stop])
        denom = norms[cand] * norms[start:stop, None]
        safe = np.where(denom > 0, denom, np.float32(1.0))
        sims = np.where(denom > 0, dots / safe, np.float32(0.0)).astype(np.float32)
        # Best first; equal scores by the lower row, as vectors.top_k orders them.
        order = np.lexsort((cand, -sims), axis=1)
        rows[start:stop] = np.take_along_axis(cand, order, axis=1)
        scores[start:stop] = np.take_along_axis(sims, order, axis=1)
    return NeighbourTable(rows, scores)
