"""A user's query vector from the version's long-term factors and their recent interactions.
Pure numpy: the worker calls it with the history it keeps in Redis, the personalization
benchmark with a replayed log, so both measure and serve the same thing.

The recent events are folded in with the ALS user step (query_engine.vectors.fold_in, weighted as
the version was trained: query_engine.confidence.history_confidences). How that combines with the
user's long-term factors u (trained on their past) is a choice, measured by `annrec bench
personalization` (BENCHMARKS.md, Personalization):

- `static`: u alone (the history is ignored; a user without factors gets it folded in);
- `recent`: the fold-in of the recent events alone, as a `recent_items` request gets;
- `blend`: (1 - w) u + w r, r the fold-in of the recent events;
- `prior`: the ALS user step with u as a Gaussian prior of strength beta = w * reg (a multiple
  of the version's regularization, so one setting suits versions trained with any):
  (Y^T Y + Y^T (C - I) Y + (reg + beta) I) x = Y^T C p + beta u: the recent events pull the
  vector away from u as far as their confidence outweighs beta.

A user without recent events keeps u in every mode; one without factors (unknown to the version)
gets the fold-in of their events in every mode, instead of a cold start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from query_engine.confidence import FoldInWeights, history_confidences
from query_engine.vectors import FloatArray, fold_in

Combination = Literal["static", "recent", "blend", "prior"]
COMBINATIONS: tuple[Combination, ...] = ("static", "recent", "blend", "prior")


@dataclass(frozen=True)
class Personalization:
    """How long-term factors and recent events combine (see the module docstring)."""

    combination: Combination = "prior"
    weight: float = 1.0  # blend: the recent vector's share; prior: beta / regularization

    def __post_init__(self) -> None:
        if self.combination == "blend" and not 0 <= self.weight <= 1:
            raise ValueError(f"blend weight must be in [0, 1], got {self.weight}")
        if self.combination == "prior" and self.weight < 0:
            raise ValueError(f"prior strength must be >= 0, got {self.weight}")

    @property
    def label(self) -> str:
        if self.combination in ("static", "recent"):
            return self.combination
        return f"{self.combination} {self.weight:g}"


# Decided by `annrec bench personalization` (BENCHMARKS.md, Personalization): on the drifting log
# prior 0.3 ... 3 and recent tie for the best hit rate (2.39x, 2.38x the static version; blend
# 0.5 1.53x); prior 1 (beta = the version's regularization) is kept because it is among the best
# and still uses the long-term factors where the recent events say little.
DEFAULT_PERSONALIZATION = Personalization()


@dataclass(frozen=True)
class HistoryEvent:
    """One remembered interaction: when (epoch s), which item, how much."""

    timestamp: float
    item_id: str
    weight: float = 1.0


def bound_history(
    events: Sequence[HistoryEvent], max_length: int, oldest: float
) -> list[HistoryEvent]:
    """The events a fold-in uses: those at or after `oldest` (epoch s), the newest
    `max_length` of them, oldest first. The Redis history applies the same bounds
    (worker/history.py); the benchmark applies this to its replayed log."""
    kept = sorted((e for e in events if e.timestamp >= oldest), key=lambda e: e.timestamp)
    return kept[-max_length:] if max_length > 0 else []


def personal_vector(
    long_term: npt.ArrayLike | None,
    history_rows: npt.ArrayLike,
    history_weights: npt.ArrayLike,
    item_factors: npt.ArrayLike,
    gramian: npt.NDArray[np.float64],
    regularization: float,
    weights: FoldInWeights,
    how: Personalization,
) -> FloatArray | None:
    """The query vector of a user (None: nothing known, a cold start). `long_term`: the user's
    factors in the version, or None; `history_rows`: item rows of their recent events (repeats
    allowed), `history_weights` the events' weights; `item_factors` indexed by those rows."""
    rows = np.asarray(history_rows, dtype=np.int64)
    u = None if long_term is None else np.asarray(long_term, dtype=np.float32)
    if len(rows) == 0 or (u is not None and how.combination == "static"):
        return u
    distinct, confidence = history_confidences(weights, rows, history_weights)
    seen = np.asarray(item_factors)[distinct]
    if u is None or how.combination == "recent":
        return fold_in(gramian, seen, regularization, confidence)
    if how.combination == "blend":
        recent = fold_in(gramian, seen, regularization, confidence)
        w = np.float32(how.weight)
        return ((np.float32(1) - w) * u + w * recent).astype(np.float32)
    return fold_in(gramian, seen, regularization, confidence, u, how.weight * regularization)
