"""Replay a time-ordered interaction log against a version trained on its past, and measure how
well each way of choosing a user's vector predicts their next new item. Pure numpy over arrays
(the training is the builder's own: index_builder.tune.train_evaluated).

The log is split in time (the latest `fraction` of its events are streamed). Factors are trained
on the past only. The later events are then streamed in time order; before each event that is a
user's first meeting with an item (the user having a past), every method predicts it from what
it knows at that moment, and the event is applied afterwards. Ranked: all items but those the
user met before (in the past or earlier in the stream); hit rate@10 and NDCG@10 as the builder's
holdout computes them (index_builder.evaluate.rank_metrics).

Methods:
- `popularity`: the past's most interacted items;
- `static`: the version's user factors (what `recommend` by user_id gave before issue 23);
- `recent_items in request`: the user's last `request_items` streamed items sent as
  `recent_items`, folded in as the worker folds them (the frontend carries them; no factors);
- `stream: <combination>`: the stream-kept history (bounded by length and age as the worker's
  Redis history) combined with the factors by query_engine.personalize.personal_vector.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse

from index_builder.evaluate import popularity_scorer, rank_metrics, train_matrix
from index_builder.inputs import Factors
from index_builder.train import Events
from query_engine.confidence import FoldInWeights, fold_in_confidences
from query_engine.personalize import HistoryEvent, Personalization, bound_history, personal_vector
from query_engine.vectors import fold_in, item_gramian


@dataclass(frozen=True)
class Split:
    train_rows: npt.NDArray[np.bool_]
    cutoff: float


def time_split(timestamps: npt.NDArray[np.float64], fraction: float) -> Split:
    cutoff = float(np.quantile(timestamps, 1.0 - fraction, method="higher"))
    return Split(timestamps < cutoff, cutoff)


@dataclass(frozen=True)
class Target:
    """One prediction: user row, the item to predict, the moment, the history before it."""

    user: int
    item: int
    at: float
    history: tuple[HistoryEvent, ...]  # streamed events before it, oldest first (unbounded)
    seen: tuple[int, ...]  # items met before it (past and stream)


def stream_targets(
    events: Events, split: Split, max_targets: int, seed: int
) -> tuple[list[Target], int]:
    """(a seeded sample of at most max_targets predictions, how many there were in all)."""
    assert events.timestamps is not None
    ts = events.timestamps
    past = split.train_rows
    seen: dict[int, set[int]] = defaultdict(set)
    for u, i in zip(events.users[past].tolist(), events.items[past].tolist(), strict=True):
        seen[u].add(i)
    later = np.flatnonzero(~past)
    later = later[np.lexsort((later, ts[later]))]
    candidates = [
        r
        for r in _first_meetings(events, later, seen)
        if events.users[r] in seen  # users with a past
    ]
    rng = np.random.default_rng(seed)
    chosen = set(
        candidates
        if len(candidates) <= max_targets
        else rng.choice(candidates, max_targets, replace=False).tolist()
    )
    history: dict[int, list[HistoryEvent]] = defaultdict(list)
    met = {u: set(s) for u, s in seen.items()}
    out = []
    for r in later.tolist():
        u, i, t = int(events.users[r]), int(events.items[r]), float(ts[r])
        if r in chosen:
            out.append(Target(u, i, t, tuple(history[u]), tuple(sorted(met.get(u, ())))))
        history[u].append(HistoryEvent(t, str(i), float(events.weights[r])))
        met.setdefault(u, set()).add(i)
    return out, len(candidates)


def _first_meetings(
    events: Events, later: npt.NDArray[np.int64], seen: dict[int, set[int]]
) -> list[int]:
    met = {u: set(s) for u, s in seen.items()}
    first = []
    for r in later.tolist():
        u, i = int(events.users[r]), int(events.items[r])
        if i not in met.setdefault(u, set()):
            first.append(r)
            met[u].add(i)
    return first


@dataclass(frozen=True)
class Bounds:
    max_length: int = 50
    max_age_s: float = 7 * 86_400
    request_items: int = 10  # what a frontend carries as recent_items


def evaluate_methods(
    factors: Factors,
    past: scipy.sparse.csr_matrix,
    targets: Sequence[Target],
    combinations: Sequence[Personalization],
    bounds: Bounds,
    reg: float,
) -> dict[str, dict[str, float]]:
    """Hit rate@10 and NDCG@10 of every method on the same targets (`reg`: the fold-in's
    regularization, the training's, as a trained version's manifest records it)."""
    items = np.asarray(factors.item_factors, dtype=np.float32)
    gramian = item_gramian(items)
    weights = factors.fold_in or FoldInWeights()
    users = np.asarray(factors.user_factors, dtype=np.float32)
    n = len(targets)
    seen = _seen_matrix(targets, items.shape[0])
    rows = np.arange(n, dtype=np.int64)
    truth = np.asarray([t.item for t in targets], dtype=np.int64)

    def measure(vectors: npt.NDArray[np.float32]) -> dict[str, float]:
        m = rank_metrics(lambda u: vectors[u] @ items.T, seen, rows, truth)
        return {"hit_rate_at_10": m.hit_rate_at_k, "ndcg_at_10": m.ndcg_at_k}

    static = np.stack([users[t.user] for t in targets]) if n else items[:0]
    out = {
        "popularity": _popularity(past, seen, rows, truth),
        "static": measure(static),
        "recent_items in request": measure(
            np.stack(
                [_request_vector(t, users, items, gramian, reg, weights, bounds) for t in targets]
            )
        ),
    }
    for how in combinations:
        vectors = [
            personal_vector(
                users[t.user],
                *_history_arrays(t, bounds),
                items,
                gramian,
                reg,
                weights,
                how,
            )
            for t in targets
        ]
        out[f"stream: {how.label}"] = measure(np.stack([v for v in vectors if v is not None]))
    return out


def _history_arrays(
    t: Target, bounds: Bounds
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    kept = bound_history(t.history, bounds.max_length, t.at - bounds.max_age_s)
    rows = np.asarray([int(e.item_id) for e in kept], dtype=np.int64)
    return rows, np.asarray([e.weight for e in kept], dtype=np.float64)


def _request_vector(
    t: Target,
    users: npt.NDArray[np.float32],
    items: npt.NDArray[np.float32],
    gramian: npt.NDArray[np.float64],
    reg: float,
    weights: FoldInWeights,
    bounds: Bounds,
) -> npt.NDArray[np.float32]:
    """What a recent_items request of the last few streamed items gets (the worker's fold-in);
    without any, the frontend asks by user_id: the static vector."""
    recent = [int(e.item_id) for e in t.history[-bounds.request_items :]]
    if not recent:
        return users[t.user]
    rows, confidence = fold_in_confidences(weights, recent)
    return fold_in(gramian, items[rows], reg, confidence)


def _seen_matrix(targets: Sequence[Target], n_items: int) -> scipy.sparse.csr_matrix:
    indptr = np.cumsum([0, *(len(t.seen) for t in targets)])
    indices = np.asarray([i for t in targets for i in t.seen], dtype=np.int64)
    data = np.ones(len(indices), dtype=np.float32)
    return scipy.sparse.csr_matrix((data, indices, indptr), shape=(len(targets), n_items))


def _popularity(
    past: scipy.sparse.csr_matrix,
    seen: scipy.sparse.csr_matrix,
    rows: npt.NDArray[np.int64],
    truth: npt.NDArray[np.int64],
) -> dict[str, float]:
    m = rank_metrics(popularity_scorer(past), seen, rows, truth)
    return {"hit_rate_at_10": m.hit_rate_at_k, "ndcg_at_10": m.ndcg_at_k}


def past_matrix(events: Events, split: Split, shape: tuple[int, int]) -> scipy.sparse.csr_matrix:
    return train_matrix(events, split.train_rows, shape)


def summary(results: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The best stream combination and its ratio to the static version."""
    stream = {k: v for k, v in results.items() if k.startswith("stream: ")}
    best = max(stream, key=lambda k: stream[k]["hit_rate_at_10"])
    static = results["static"]["hit_rate_at_10"]
    return {
        "best_stream": best,
        "hit_ratio_vs_static": results[best]["hit_rate_at_10"] / static if static else None,
    }
