"""user -> items by norm bands: the query path over a version's MIPS indexes.

Why bands: the Bachrach transform appends sqrt(M^2 - ||x||^2) with one global M. With skewed
norms (matrix-factorization output: a few long item vectors, a long tail of short ones) the short
items' extra coordinate is almost M, they crowd together, and a query with 0 appended is nearly
equidistant from all of them: trees over the whole catalogue separate nothing (measured at 1M: 0.94
recall only at 0.14x the speed of a scan). Sorting items by norm and cutting them into bands of
geometric size, each augmented with its own M, keeps every band's norms within a small ratio,
where the transform works. And most answers live in the first bands: an item of norm r scores at
most r * ||q|| (Cauchy-Schwarz), so once k items score above that, no later band can contribute.

The first bands are short and hold the most extreme norms, the ones trees split worst, so they
can be scanned exactly instead (`exact_items`): a matrix-vector product over a few thousand
contiguous rows costs microseconds. With every band exact, or search_k -1 (every node), the
answer is the exact top-k.

Shared by the builder (which measures it) and the worker (which serves with it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from annoy import AnnoyIndex

from schemas.vectors import top_k

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
Ranked = tuple[IntArray, FloatArray]

FIRST_BAND = 512  # items in the first (longest-norm) band
BAND_GROWTH = 4  # each band this many times the previous one
# Exact heads the quality report tries (items scanned exactly before the trees take over); a
# worker keeps this many norm-ordered rows contiguous in memory (8 MiB at K=64).
EXACT_HEADS = (512, 2048, 8192)
HEAD_ROWS = max(EXACT_HEADS)
# Candidates fetched from a band's index per result wanted, then scored exactly: Annoy ranks in
# float32 angular distance, which can swap near-ties (measured: 1e-4 apart in inner product).
BAND_OVERFETCH = 2


def band_bounds(n_items: int, first: int = FIRST_BAND, growth: int = BAND_GROWTH) -> list[int]:
    """Band edges over norm-ordered positions: [0, first, first*(1+growth), ..., n_items].
    A last band smaller than its predecessor is merged into it (no tiny trailing index)."""
    if n_items < 1 or first < 1 or growth < 1:
        raise ValueError(f"need n_items, first, growth >= 1 (got {n_items}, {first}, {growth})")
    edges, size = [0], first
    while edges[-1] + size < n_items:
        edges.append(edges[-1] + size)
        size *= growth
    if len(edges) > 1 and n_items - edges[-1] < (edges[-1] - edges[-2]) // 2:
        edges.pop()
    edges.append(n_items)
    return edges


def norm_order(item_factors: FloatArray) -> tuple[npt.NDArray[np.int32], FloatArray]:
    """(item rows by decreasing norm, ties by row; their norms)."""
    norms = np.linalg.norm(np.asarray(item_factors, dtype=np.float32), axis=1)
    order = np.argsort(-norms, kind="stable").astype(np.int32)
    return order, norms[order].astype(np.float32)


@dataclass(frozen=True)
class Band:
    start: int
    stop: int
    max_norm: float
    index: AnnoyIndex


@dataclass(frozen=True)
class NormBands:
    """A loaded set of bands over one version's item factors; read-only, safe across threads."""

    bands: Sequence[Band]
    order: npt.NDArray[np.int32]  # item rows, largest norm first
    item_factors: FloatArray  # by row (mmapped in a worker)
    head: FloatArray  # item_factors[order[:HEAD_ROWS]], contiguous: exact bands scan it

    @classmethod
    def create(
        cls, bands: Sequence[Band], order: npt.NDArray[np.int32], item_factors: FloatArray
    ) -> NormBands:
        head = np.ascontiguousarray(item_factors[order[:HEAD_ROWS]], dtype=np.float32)
        return cls(bands=tuple(bands), order=order, item_factors=item_factors, head=head)

    def rows(self, start: int, stop: int) -> FloatArray:
        """Norm-ordered factor rows [start, stop): a view of the head when it covers them."""
        if stop <= len(self.head):
            return self.head[start:stop]
        return np.asarray(self.item_factors[self.order[start:stop]])

    def unload(self) -> None:
        for band in self.bands:
            band.index.unload()


def max_inner_product(
    bands: NormBands,
    query: FloatArray,
    k: int,
    search_k: int = -1,
    exact_items: int = 0,
) -> Ranked:
    """Items with the largest inner product with `query`, exact scores, best first.

    Bands ending at or before `exact_items` are scanned exactly, the others searched by their
    Annoy index with `search_k` nodes (-1: every node, so exact). Candidates are scored
    exactly as they are found, so the bound compares true scores.
    """
    q = np.asarray(query, dtype=np.float32)
    q_norm = math.sqrt(max(float(q @ q), 0.0))
    augmented = q.tolist()
    augmented.append(0.0)  # the query side of the transform
    positions: list[IntArray] = []
    scores: list[FloatArray] = []
    kth, found = -math.inf, 0
    for band in bands.bands:
        if found >= k and band.max_norm * q_norm <= kth:
            break  # nothing in this band or any later one can beat what was found
        if band.stop <= exact_items:
            band_scores = bands.rows(band.start, band.stop) @ q
            best = _largest(band_scores, k)
            pos, band_scores = best + band.start, band_scores[best]
        else:
            # Annoy's own default (-1) is n_trees * results, not every node: spell it out.
            budget = (
                search_k if search_k >= 0 else band.index.get_n_trees() * (band.stop - band.start)
            )
            ids = band.index.get_nns_by_vector(augmented, k * BAND_OVERFETCH, budget)
            pos = np.asarray(ids, dtype=np.int64) + band.start
            band_scores = np.asarray(bands.item_factors[bands.order[pos]]) @ q
        positions.append(pos)
        scores.append(band_scores)
        found += len(pos)
        if found >= k:
            kth = _kth_largest(scores, k)
    if not positions:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    all_pos, all_scores = np.concatenate(positions), np.concatenate(scores).astype(np.float32)
    best = top_k(all_scores, k)
    return bands.order[all_pos[best]].astype(np.int64), all_scores[best]


def _largest(scores: FloatArray, k: int) -> IntArray:
    """Positions of the k largest scores, unordered (top_k orders them once, at the end)."""
    if len(scores) <= k:
        return np.arange(len(scores), dtype=np.int64)
    return np.argpartition(scores, -k)[-k:]


def _kth_largest(scores: list[FloatArray], k: int) -> float:
    merged = scores[0] if len(scores) == 1 else np.concatenate(scores)
    return float(np.partition(merged, len(merged) - k)[len(merged) - k])
