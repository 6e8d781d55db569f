"""The confidences of a folded-in user's items, weighted as the version was trained. Pure numpy.

annrec trains ALS on implicit.nearest_neighbours' `tfidf_weight` / `bm25_weight` of the *item x
user* matrix (index_builder/train.py `weigh`: an item's users are its document, the users its
terms). So, with N the items of the training matrix, n_u the distinct items of user u and w_ui the
user's summed weight of item i (a count, for recent items):

    idf(u)  = log(N) - log1p(n_u)                        one factor per user, not per item
    tfidf:    w'_ui = sqrt(w_ui) * idf(u)
    bm25:     w'_ui = w_ui (K1 + 1) / (K1 norm(i) + w_ui) * idf(u)
              norm(i) = (1 - B) + B * length(i) / mean length   (length: item i's summed weight)

each computed with implicit's expressions on the same dtypes (the float32 training matrix, float32
lengths, a float64 idf), rounded to float32 as the fitted matrix was, and ALS's confidence is
alpha * w' in float32 (alpha * w for raw weights). A training user's own items thus get the
confidences their row had in the fit (the tests find them equal to the last bit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schemas.manifest import Weighting

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class FoldInWeights:
    """What a version's fold-in needs to weigh a user's items as its training did."""

    weighting: Weighting = "raw"
    alpha: float = 1.0
    idf_items: int = 0  # N of the idf (tfidf, bm25)
    bm25_k1: float = 0.0
    bm25_b: float = 0.0
    item_lengths: npt.NDArray[np.float32] | None = None  # bm25: summed weight per item row
    average_length: float = 0.0  # bm25: their mean (a float32 value)

    def __post_init__(self) -> None:
        if self.weighting != "raw" and self.idf_items < 1:
            raise ValueError(f"{self.weighting} fold-in needs the training matrix's item count")
        if self.weighting == "bm25" and (self.item_lengths is None or self.average_length <= 0):
            raise ValueError("bm25 fold-in needs the item lengths and their mean")


def item_confidences(
    weights: FoldInWeights, rows: npt.ArrayLike, counts: npt.ArrayLike
) -> FloatArray:
    """The ALS confidence of each of one user's items: `rows` distinct item rows (all the user's
    items: their number is n_u of the idf), `counts` the user's summed weight of each."""
    r = np.asarray(rows, dtype=np.int64)
    if weights.weighting == "raw":
        return weights.alpha * np.asarray(counts, dtype=np.float64)
    w = np.asarray(counts, dtype=np.float32)  # the training matrix's dtype
    # implicit: log(N) - log1p(bincount(columns)), the log1p over an array as there.
    idf = np.log(float(weights.idf_items)) - np.log1p(np.array([len(r)], dtype=np.int64))[0]
    weighted: npt.NDArray[np.float64]
    if weights.weighting == "tfidf":
        weighted = np.sqrt(w) * idf
    else:
        assert weights.item_lengths is not None
        b, k1 = weights.bm25_b, weights.bm25_k1
        lengths = weights.item_lengths[r]
        norm = (1.0 - b) + b * lengths / np.float32(weights.average_length)
        weighted = w * (k1 + 1.0) / (k1 * norm + w) * idf
    # The fit saw the weighted matrix in float32, times alpha in float32 (implicit's fit).
    conf: npt.NDArray[np.float32] = weighted.astype(np.float32) * np.float32(weights.alpha)
    return conf.astype(np.float64)


def fold_in_confidences(
    weights: FoldInWeights, recent: npt.ArrayLike
) -> tuple[IntArray, float | FloatArray]:
    """(rows, confidence) for vectors.fold_in and explain_scores, from a user's recent item rows
    (a repeated row is one more interaction). raw: the rows as given, alpha each, as annrec has
    always folded them in; tfidf and bm25: the distinct rows, first seen first, each weighted from
    its count."""
    r = np.asarray(recent, dtype=np.int64)
    if weights.weighting == "raw":
        return r, weights.alpha
    distinct, first, counts = np.unique(r, return_index=True, return_counts=True)
    order = np.argsort(first, kind="stable")
    rows = distinct[order]
    return rows, item_confidences(weights, rows, counts[order])


def history_confidences(
    weights: FoldInWeights, rows: npt.ArrayLike, amounts: npt.ArrayLike
) -> tuple[IntArray, FloatArray]:
    """(distinct rows, confidence) of a user's interaction history: each event's row and
    weight (`amounts`), a repeated item's weights summed, as the training matrix sums a log's
    repeated rows (raw: alpha * the sum, as ALS saw it; tfidf, bm25: weighted from it)."""
    r = np.asarray(rows, dtype=np.int64)
    distinct, first, inverse = np.unique(r, return_index=True, return_inverse=True)
    summed = np.bincount(inverse, weights=np.asarray(amounts, dtype=np.float64))
    order = np.argsort(first, kind="stable")  # first seen first, as fold_in_confidences
    return distinct[order], item_confidences(weights, distinct[order], summed[order])
