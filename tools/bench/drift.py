"""A synthetic interaction log whose users' interests drift: what stream-kept personalization is
for. Pure numpy, seeded.

Items sit around taste clusters with a lognormal popularity, as in index_builder.synth. Each user
has a lasting main taste and a current interest that drifts: before each of their events, with
probability `p_switch`, the current interest moves to another cluster (drawn with the clusters'
popularity); the event is from the main taste with probability `p_main`, else from the current
interest. Timestamps are spread uniformly over `days`, in order per user. So a user's past
(what a version's factors are trained on) says where their main taste is and where their
interest used to be; their last few events say where it is now.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from query_engine.vectors import unit_rows


@dataclass(frozen=True)
class DriftParams:
    users: int = 5_000
    items: int = 5_000
    dim: int = 32
    events_per_user: int = 60
    clusters: int = 64
    days: float = 60.0
    p_switch: float = 0.15  # the current interest lasts 1 / p_switch events on average
    p_main: float = 0.3
    temperature: float = 0.1


@dataclass(frozen=True)
class DriftLog:
    users: npt.NDArray[np.int64]
    items: npt.NDArray[np.int64]
    timestamps: npt.NDArray[np.float64]  # epoch seconds from 0


def drifting_log(p: DriftParams, seed: int = 0) -> DriftLog:
    rng = np.random.default_rng(seed)
    centers = unit_rows(rng.standard_normal((p.clusters, p.dim)))
    weights = 1.0 / np.arange(1, p.clusters + 1) ** 0.8
    weights /= weights.sum()
    item_cluster = rng.choice(p.clusters, size=p.items, p=weights)
    vectors = unit_rows(
        centers[item_cluster] + rng.standard_normal((p.items, p.dim)) / np.sqrt(p.dim)
    )
    logits = centers @ vectors.T / p.temperature + rng.normal(0.0, 1.0, size=p.items)
    cdf = np.cumsum(np.exp(logits - logits.max(axis=1, keepdims=True)), axis=1)
    cdf /= cdf[:, -1:]

    main = rng.choice(p.clusters, size=p.users, p=weights)
    current = rng.choice(p.clusters, size=p.users, p=weights)
    tastes = np.empty((p.users, p.events_per_user), dtype=np.int64)
    for j in range(p.events_per_user):
        moves = rng.random(p.users) < p.p_switch
        current = np.where(moves, rng.choice(p.clusters, size=p.users, p=weights), current)
        tastes[:, j] = np.where(rng.random(p.users) < p.p_main, main, current)
    flat = tastes.ravel()
    draws = rng.random(flat.size)
    items = np.empty(flat.size, dtype=np.int64)
    for c in np.unique(flat):  # one searchsorted per cluster's distribution
        at = np.flatnonzero(flat == c)
        items[at] = np.minimum(np.searchsorted(cdf[c], draws[at], side="right"), p.items - 1)
    times = np.sort(rng.uniform(0, p.days * 86_400, size=(p.users, p.events_per_user)), axis=1)
    users = np.repeat(np.arange(p.users, dtype=np.int64), p.events_per_user)
    return DriftLog(users, items, times.ravel())
