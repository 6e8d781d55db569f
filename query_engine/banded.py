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
from itertools import repeat

import numpy as np
import numpy.typing as npt
from annoy import AnnoyIndex

from query_engine.selection import Selection

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
Ranked = tuple[IntArray, FloatArray]

# Items in the first (longest-norm) band, and the growth of each next band. The longest norms are
# too spread for trees to separate, so the first bands are scanned exactly (EXACT_HEADS); a small
# first band lets the bound stop after 512 items when the answers are all there, as they are on
# ALS factors (BENCHMARKS.md, "user -> items", compares heads and bands at 1M x 64).
FIRST_BAND = 512
BAND_GROWTH = 4
# Exact heads the quality report tries: the first one, two or three bands scanned exactly. A
# worker keeps this many norm-ordered rows contiguous in memory (2.6 MiB at K=64).
EXACT_HEADS = (
    FIRST_BAND,
    FIRST_BAND * (1 + BAND_GROWTH),
    FIRST_BAND * (1 + BAND_GROWTH + BAND_GROWTH**2),
)
HEAD_ROWS = max(EXACT_HEADS)
# Bound factors the quality report tries: 1 is the exact Cauchy-Schwarz bound; below 1 a band is
# searched only when factor * max_norm(band) * ||q|| beats the k-th score, i.e. when reaching it
# would not take an almost-parallel item. On MF factors the later bands rarely hold an answer
# even when the bound allows it, so a smaller factor trades a little recall for fewer bands.
BOUND_FACTORS = (0.5, 0.75, 1.0)  # cheapest first
# Candidates fetched from a band's index per result wanted, then scored exactly: Annoy ranks in
# float32 angular distance, which can swap near-ties (measured: 1e-4 apart in inner product).
BAND_OVERFETCH = 2


def _widened(pool_size: int, keep: Selection, widen: float, band_size: int) -> int:
    """Candidates to ask a band for so that about pool_size of them pass `keep`."""
    return min(band_size, math.ceil(pool_size * widen / max(keep.fraction, 1e-9)))


def band_bounds(n_items: int, first: int = FIRST_BAND, growth: int = BAND_GROWTH) -> list[int]:
    """Band edges over norm-ordered positions: [0, first, first*(1+growth), ..., n_items].
    A last band under half its predecessor's size is merged into it (no tiny trailing index),
    except into the first band, which must stay small enough to scan."""
    if n_items < 1 or first < 1 or growth < 1:
        raise ValueError(f"need n_items, first, growth >= 1 (got {n_items}, {first}, {growth})")
    edges, size = [0], first
    while edges[-1] + size < n_items:
        edges.append(edges[-1] + size)
        size *= growth
    if len(edges) > 2 and n_items - edges[-1] < (edges[-1] - edges[-2]) // 2:
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
        cls,
        bands: Sequence[Band],
        order: npt.NDArray[np.int32],
        item_factors: FloatArray,
        head_rows: int = HEAD_ROWS,
    ) -> NormBands:
        head = np.ascontiguousarray(item_factors[order[:head_rows]], dtype=np.float32)
        return cls(bands=tuple(bands), order=order, item_factors=item_factors, head=head)

    def rows(self, start: int, stop: int) -> FloatArray:
        """Norm-ordered factor rows [start, stop): a view of the head when it covers them."""
        if stop <= len(self.head):
            return self.head[start:stop]
        return np.asarray(self.item_factors[self.order[start:stop]])

    def rows_at(self, positions: IntArray) -> FloatArray:
        """Factor rows at these norm-ordered positions: from the head when it holds them all
        (the usual case: compact, cache-friendly rows)."""
        if len(positions) and positions.max() < len(self.head):
            return self.head[positions]
        return np.asarray(self.item_factors[self.order[positions]])

    def unload(self) -> None:
        for band in self.bands:
            band.index.unload()


def max_inner_product(
    bands: NormBands,
    query: FloatArray,
    k: int,
    search_k: int = -1,
    exact_items: int = 0,
    bound_factor: float = 1.0,
    keep: Selection | None = None,
    widen: float = 1.0,
) -> Ranked:
    """Items with the largest inner product with `query`, exact scores, best first.

    Bands ending at or before `exact_items` are scanned exactly, the others searched by their
    Annoy index with `search_k` nodes (-1: every node, so exact); a band is searched while
    bound_factor * max_norm(band) * ||q|| can beat the k-th score (1: the exact bound).

    While searching, an Annoy candidate's score comes from its distance (no vector read: this
    loop runs per request, and every microsecond counts at 1M items); the candidates that remain
    in the pool of the best k * BAND_OVERFETCH are then scored exactly, once (those of exact
    bands already are).

    `keep`: only items of this selection may be returned (a request's filter). Each tree band is
    then asked for pool / selectivity * `widen` candidates, of which those passing join the pool,
    so the bound compares against the k-th *passing* score. Fewer than k results mean the search
    found too few passing items, or cannot prove that an item a band did not return scores lower;
    the planner (query_engine/filtered.py) then widens, or scans.
    """
    q = np.asarray(query, dtype=np.float32)
    q_norm = math.sqrt(max(float(q @ q), 0.0))
    pool_size = k * BAND_OVERFETCH
    # Annoy's float32 distances are off by ~1e-6 of ||q|| * M; pruning waits until a band is
    # below the k-th score by far more than that, so the bound stays a proof.
    slack = 1e-4 * q_norm * bands.bands[0].max_norm
    augmented: list[float] | None = None
    pool: list[Entry] = []  # best first after a sort
    kth = math.inf
    searched_trees = False
    # With `keep`: the best score an item a band did not return can have (its index returned
    # the band's best `wanted` by inner product; the rest score lower). Results below it are
    # not proven, and are cut, so the planner widens.
    unseen = -math.inf
    for band in bands.bands:
        if len(pool) >= k and bound_factor * band.max_norm * q_norm < kth - slack:
            break  # nothing in this band or any later one can beat what was found
        if band.stop <= exact_items:
            pool.extend(_scan_band(bands, band, q, k, keep))
        else:
            if augmented is None:
                augmented = q.tolist()
                augmented.append(0.0)  # the query side of the transform
            found, band_unseen = _search_band(
                bands, band, augmented, q_norm, pool_size, search_k, keep, widen
            )
            pool.extend(found)
            unseen = max(unseen, band_unseen)
            searched_trees = True
        pool.sort(reverse=True)
        del pool[pool_size:]
        if len(pool) >= k:
            kth = pool[k - 1][0]
    approximate = [i for i, entry in enumerate(pool) if not entry[2]] if searched_trees else []
    if approximate:
        positions = np.array([pool[i][1] for i in approximate], dtype=np.int64)
        exact = bands.rows_at(positions) @ q
        for i, score in zip(approximate, exact.tolist(), strict=True):
            pool[i] = (score, pool[i][1], True)
        pool.sort(reverse=True)
    top = pool[:k]
    if keep is not None and unseen > -math.inf:
        top = [entry for entry in top if entry[0] > unseen + slack]
    rows = bands.order[np.array([pos for _, pos, _ in top], dtype=np.int64)].astype(np.int64)
    return rows, np.array([score for score, _, _ in top], dtype=np.float32)


Entry = tuple[float, int, bool]  # (score, norm-order position, whether the score is exact)


def _scan_band(
    bands: NormBands, band: Band, q: FloatArray, k: int, keep: Selection | None
) -> list[Entry]:
    if keep is None:
        scores = bands.rows(band.start, band.stop) @ q
        positions = np.arange(band.start, band.stop)
    else:  # only the passing rows are read: a selective filter makes a band cheap to scan
        inside = keep.passes(bands.order[band.start : band.stop])
        positions = np.flatnonzero(inside) + band.start
        scores = bands.rows_at(positions) @ q
    # Exact scores need no over-fetch: the band's own top k is all it can contribute.
    best = np.argpartition(scores, -k)[-k:] if len(scores) > k else np.arange(len(scores))
    return list(zip(scores[best].tolist(), positions[best].tolist(), repeat(True)))


def band_search_k(band: Band, search_k: int, wanted: int, pool_size: int) -> int:
    """Annoy's search_k for asking `band` for `wanted` candidates, `search_k` being tuned for
    `pool_size` of them (-1: every node)."""
    n_trees = band.index.get_n_trees()
    # Annoy's own default (-1) is n_trees * results, not every node: spell it out.
    budget = search_k if search_k >= 0 else n_trees * (band.stop - band.start)
    if wanted > pool_size:
        # Annoy stops collecting at search_k candidates: to return `wanted` good ones it needs
        # its default of wanted x n_trees at least (a tuned search_k is for pool_size).
        budget = max(budget * wanted // pool_size, wanted * n_trees)
    return budget


def _search_band(
    bands: NormBands,
    band: Band,
    augmented: list[float],
    q_norm: float,
    pool_size: int,
    search_k: int,
    keep: Selection | None,
    widen: float,
) -> tuple[list[Entry], float]:
    """(candidates with scores from Annoy's distances, the best score an unreturned passing
    item of this band can have: -inf when none can be missing)."""
    size = band.stop - band.start
    wanted = pool_size if keep is None else _widened(pool_size, keep, widen, size)
    budget = band_search_k(band, search_k, wanted, pool_size)
    ids, distances = band.index.get_nns_by_vector(augmented, wanted, budget, include_distances=True)
    # Angular distance on the augmented vectors: d^2 = 2 - 2 cos, and every item of the band
    # has norm max_norm, so q.x = cos * ||q|| * max_norm.
    scale = q_norm * band.max_norm
    unseen = -math.inf
    if keep is not None and ids:
        if len(ids) == wanted < size:  # the band's best `wanted`: the rest score lower
            unseen = (1.0 - distances[-1] ** 2 / 2.0) * scale
        found = np.asarray(ids, dtype=np.int64)
        passing = keep.passes(bands.order[found + band.start])
        ids = found[passing].tolist()
        distances = np.asarray(distances)[passing].tolist()
    scores = [(1.0 - d * d / 2.0) * scale for d in distances]
    return list(zip(scores, [i + band.start for i in ids], repeat(False))), unseen
