"""The `because` of an explained item: its largest contributions, from the exact ALS
decomposition (query_engine.vectors.explain_scores). Pure numpy.

Cheap on purpose: a request with 10 recent items and k=10 has 100 terms, of which the reply lists
30, and `explain` is held to twice the cost of the same request without it (BENCHMARKS.md,
Explanations). So only the listed terms are turned into Python numbers, in three calls, and a
repeated recent item is merged only when there is one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Rows = npt.NDArray[np.int64]
Terms = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TopContributions:
    """Per explained item (one list each, in the order of the terms' rows): the history rows
    contributing most, largest first, their part of the score and its share of it."""

    rows: list[list[int]]
    parts: list[list[float]]
    shares: list[list[float]]


def top_contributions(terms: Terms, seen: Rows, top: int) -> TopContributions:
    """The `top` largest contributions to each target's score, from `terms` (targets x seen
    rows, as explain_scores gives them); a row seen more than once is one history item, its
    terms added up. A share is the part over the sum of all the target's terms (its score), 0
    when that is 0."""
    history = np.asarray(seen, dtype=np.int64)
    rows = history.tolist()
    if len(set(rows)) < len(rows):  # a repeated recent item: one column per distinct row
        history, inverse = np.unique(history, return_inverse=True)
        merged = np.zeros((len(history), len(terms)))
        np.add.at(merged, inverse, terms.T)
        terms = merged.T
    best = np.argsort(-terms, axis=1, kind="stable")[:, :top]
    parts = np.take_along_axis(terms, best, axis=1)
    totals = terms.sum(axis=1, keepdims=True)
    shares = parts / np.where(totals != 0, totals, np.inf)  # a zero score: shares 0
    return TopContributions(history[best].tolist(), parts.tolist(), shares.tolist())
