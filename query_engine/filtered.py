"""Filtered top-k: the planner that keeps k results and recall at any selectivity.

Post-filtering (search, then drop what fails the filter) returns fewer and worse items as the
filter gets selective: at 1% selectivity, 100 candidates hold about one passing item. Instead:

- selectivity >= threshold: search the index asking for k / selectivity candidates (tree bands
  widen the same way), keep those that pass; if fewer than k pass, widen 4x, up to
  WIDEN_ROUNDS times, then scan.
- selectivity < threshold: score exactly over the passing subset, one matrix product over its
  rows (a few thousand rows cost less than any index search that has to skip the rest).

The threshold is measured per version by the builder's quality report (the selectivity below
which exact-over-subset is the faster way to the target recall), not guessed. Shared by the
builder (which measures it) and the worker (which serves with it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from annoy import AnnoyIndex

from query_engine import banded
from query_engine.search import OVERFETCH, scaled_search_k
from query_engine.selection import Selection
from query_engine.vectors import cosine_scores, top_k

FloatArray = npt.NDArray[np.float32]
Ranked = tuple[npt.NDArray[np.int64], FloatArray]
Strategy = Literal["ann", "exact"]

# An index search that found fewer than k passing items asks for 4x more, three times at most,
# then the planner scans: a bounded cost, and an exact answer at the end.
WIDEN_ROUNDS = 3
WIDEN_FACTOR = 4
# Norm-ordered items a filtered user -> items search scans exactly (their passing rows only):
# the whole contiguous head, whatever head the unfiltered plan tuned: the passing items among the
# longest norms are the likeliest answers and the ones trees separate worst (BENCHMARKS.md,
# filters: recall >= 0.98 at every selectivity at 1M).
FILTERED_HEAD = banded.HEAD_ROWS
# Above this share of the catalogue, scoring every item and masking beats gathering the rows.
DENSE_SCAN_FRACTION = 0.25
# user -> items, exact: up to this many passing items are scored all at once (gathered); more
# are scanned band by band under the norm bound (query_engine/banded.py), which reads fewer rows
# whenever the answers live in the long-norm bands. Measured at 1M x 64 (BENCHMARKS.md).
GATHER_ROWS = 20_000


def choose(selection: Selection, threshold: float) -> Strategy:
    return "exact" if selection.fraction < threshold else "ann"


def subset_max_inner_product(
    item_factors: FloatArray, query: FloatArray, k: int, keep: Selection
) -> Ranked:
    """The exact top-k by inner product among the passing items: every one of them scored."""
    return _exact(item_factors, keep, k, lambda rows: np.asarray(item_factors[rows]) @ query)


def exact_max_inner_product(
    bands: banded.NormBands, query: FloatArray, k: int, keep: Selection
) -> Ranked:
    """The exact top-k by inner product among the passing items, cheaply: a small subset is
    scored whole; a large one band by band from the longest norms down (each band reading only
    its passing rows), stopping when no passing item left can beat the k-th (Cauchy-Schwarz).
    On MF factors a filter passing 10% of 1M items is then answered from the first bands."""
    if keep.count <= GATHER_ROWS:
        return subset_max_inner_product(bands.item_factors, query, k, keep)
    keep.mask  # noqa: B018 - one pass over the catalogue; every band then looks rows up in it
    return banded.max_inner_product(bands, query, k, -1, len(bands.order), 1.0, keep=keep)


def exact_similar_items(
    item_factors: FloatArray, item_norms: FloatArray, row: int, k: int, keep: Selection
) -> Ranked:
    """The exact top-k by cosine among the passing items, item `row` itself excluded."""
    query = np.asarray(item_factors[row])
    rows, scores = _exact(
        item_factors,
        keep,
        k + 1,
        lambda r: cosine_scores(np.asarray(item_factors[r]), item_norms[r], query),
    )
    others = rows != row
    return rows[others][:k], scores[others][:k]


def max_inner_product(
    bands: banded.NormBands,
    query: FloatArray,
    k: int,
    keep: Selection,
    threshold: float,
    search_k: int = -1,
    exact_items: int = 0,
    bound_factor: float = 1.0,
) -> tuple[Ranked, Strategy]:
    """user -> items under a filter: (best first, the strategy that produced them)."""
    if choose(keep, threshold) == "ann":
        # A filter thins every band: the filtered top-k reaches deeper into the norm order than
        # the unfiltered one, past a small exact head into bands that trees answer less well.
        # Scanning the passing rows of the whole contiguous head costs little, so do.
        head = max(exact_items, FILTERED_HEAD)
        widen = 1.0
        for _ in range(WIDEN_ROUNDS):
            rows, scores = banded.max_inner_product(
                bands, query, k, search_k, head, bound_factor, keep=keep, widen=widen
            )
            if len(rows) >= min(k, keep.count):
                return (rows, scores), "ann"
            widen *= WIDEN_FACTOR
    return exact_max_inner_product(bands, query, k, keep), "exact"


def similar_items(
    index: AnnoyIndex,
    item_factors: FloatArray,
    item_norms: FloatArray,
    row: int,
    k: int,
    keep: Selection,
    threshold: float,
    search_k: int = -1,
) -> tuple[Ranked, Strategy]:
    """item -> items under a filter: (best first, the strategy that produced them)."""
    if choose(keep, threshold) == "ann":
        passing_others = keep.count - keep.contains(row)
        n_items = len(item_norms)
        n = min(n_items, math.ceil((k + 1) * OVERFETCH / max(keep.fraction, 1e-9)))
        for _ in range(WIDEN_ROUNDS):
            found = np.asarray(
                index.get_nns_by_item(row, n, scaled_search_k(search_k, n)), dtype=np.int64
            )
            candidates = found[keep.passes(found) & (found != row)]
            if len(candidates) >= min(k, passing_others) or n == n_items:
                scores = cosine_scores(
                    np.asarray(item_factors[candidates]),
                    item_norms[candidates],
                    np.asarray(item_factors[row]),
                )
                best = top_k(scores, min(k, len(scores)))
                return (candidates[best], scores[best]), "ann"
            n = min(n_items, n * WIDEN_FACTOR)
    return exact_similar_items(item_factors, item_norms, row, k, keep), "exact"


def _exact(
    item_factors: FloatArray, keep: Selection, k: int, score_rows: Callable[[Any], FloatArray]
) -> Ranked:
    if keep.count == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    if keep.fraction >= DENSE_SCAN_FRACTION:
        scores = np.asarray(score_rows(slice(None)), dtype=np.float32)
        scores[~keep.mask] = -np.inf
        best = top_k(scores, min(k, keep.count))
        return best.astype(np.int64), scores[best]
    rows = keep.rows
    scores = np.asarray(score_rows(rows), dtype=np.float32)
    best = top_k(scores, min(k, len(rows)))
    return rows[best], scores[best]
