"""Holdout evaluation of trained factors against popularity: pure functions over arrays.

The split is built so the holdout cannot leak into training: the training matrix is made only from
the rows the split keeps, and every target is a (user, item) pair with no row among them.

- `time` (the log has timestamps): rows from the cutoff (the `fraction` quantile of the times,
  from the end) on are held out; a user with rows before it is evaluated on the first item after
  it that they had not met before it. Training sees only the past, as a served model does.
- `file_order` (no timestamps): each user's newest item, the (user, item) pair whose first row
  comes last in the file, is held out with all its rows; users with a single item are not
  evaluated (there is nothing to learn them from).

Metrics at k (10): hit rate (the target is in the top k), NDCG (1 / log2(rank + 2), one relevant
item) and catalogue coverage (distinct items in any top k / items). Items a user met in training
are never recommended to them, by the model or by popularity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from schemas.manifest import RankingMetrics

if TYPE_CHECKING:
    import scipy.sparse

    from index_builder.train import Events

K = 10
# user rows -> their scores for every item, a new array (top_k writes into it)
Scorer = Callable[[npt.NDArray[np.int64]], npt.NDArray[np.float32]]


@dataclass(frozen=True)
class Holdout:
    """Training rows (a mask over the events) and one target item per evaluated user."""

    rule: Literal["time", "file_order"]
    train_rows: npt.NDArray[np.bool_]
    users: npt.NDArray[np.int64]
    items: npt.NDArray[np.int64]
    cutoff: float | None = None


def split_holdout(
    events: Events,
    n_items: int,
    *,
    fraction: float = 0.2,
    max_users: int = 10_000,
    seed: int = 0,
) -> Holdout:
    """The holdout of `events` (by time when they have timestamps, else by file order), with at
    most `max_users` evaluated users (a seeded sample)."""
    rng = np.random.default_rng(seed)
    if events.timestamps is not None:
        return _time_split(events, n_items, fraction, max_users, rng)
    return _file_order_split(events, n_items, max_users, rng)


def _time_split(
    events: Events, n_items: int, fraction: float, max_users: int, rng: np.random.Generator
) -> Holdout:
    assert events.timestamps is not None
    ts = events.timestamps
    cutoff = float(np.quantile(ts, 1.0 - fraction, method="higher")) if len(ts) else 0.0
    train = ts < cutoff
    known = _pair_keys(events, train, n_items)
    later = np.flatnonzero(~train)
    later = later[np.lexsort((later, ts[later]))]  # by time, then file order
    has_past = np.zeros(int(events.users.max(initial=-1)) + 1, dtype=bool)
    has_past[events.users[train]] = True
    keys = events.users[later] * n_items + events.items[later]
    new = later[has_past[events.users[later]] & ~np.isin(keys, known)]
    _, first = np.unique(events.users[new], return_index=True)  # each user's first new item
    chosen = _sample(new[first], max_users, rng)
    return Holdout("time", train, events.users[chosen], events.items[chosen], cutoff)


def _file_order_split(
    events: Events, n_items: int, max_users: int, rng: np.random.Generator
) -> Holdout:
    keys = events.users * n_items + events.items
    pair_keys, first_row = np.unique(keys, return_index=True)
    pair_users = pair_keys // n_items
    by_user = np.lexsort((first_row, pair_users))  # each user's pairs, oldest first
    newest = by_user[np.r_[pair_users[by_user][1:] != pair_users[by_user][:-1], True]]
    n_pairs = np.bincount(pair_users)
    newest = newest[n_pairs[pair_users[newest]] >= 2]  # single-item users: nothing to learn from
    held = _sample(newest, max_users, rng)
    train = ~np.isin(keys, pair_keys[held])
    users, items = pair_users[held], pair_keys[held] % n_items
    return Holdout("file_order", train, users.astype(np.int64), items.astype(np.int64))


def _pair_keys(events: Events, rows: npt.NDArray[np.bool_], n_items: int) -> npt.NDArray[np.int64]:
    return np.unique(events.users[rows] * n_items + events.items[rows])


def _sample(
    rows: npt.NDArray[np.int64], max_users: int, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    if len(rows) <= max_users:
        return np.sort(rows)
    return np.sort(rng.choice(rows, size=max_users, replace=False))


def train_matrix(
    events: Events, rows: npt.NDArray[np.bool_], shape: tuple[int, int]
) -> scipy.sparse.csr_matrix:
    """The user x item matrix of the selected rows, summed as the loader sums the whole log."""
    import scipy.sparse as sparse

    matrix = sparse.coo_matrix(
        (events.weights[rows], (events.users[rows], events.items[rows])), shape=shape
    ).tocsr()
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    matrix = matrix.astype(np.float32)
    matrix.sort_indices()
    return matrix


def sub_events(events: Events, rows: npt.NDArray[np.bool_]) -> Events:
    """The selected rows, in file order (a holdout inside a training part: validation)."""
    from index_builder.train import Events

    ts = None if events.timestamps is None else events.timestamps[rows]
    return Events(events.users[rows], events.items[rows], events.weights[rows], ts)


def rank_metrics(
    scores: Scorer,
    seen: scipy.sparse.csr_matrix,
    users: npt.NDArray[np.int64],
    targets: npt.NDArray[np.int64],
    k: int = K,
) -> RankingMetrics:
    """Hit rate@k, NDCG@k and coverage of `scores` for one target per user, the items each user
    met in `seen` (their training row) excluded. Ties are broken by item row."""
    if len(users) == 0:
        return RankingMetrics(hit_rate_at_k=0.0, ndcg_at_k=0.0, coverage=0.0)
    n_items = seen.shape[1]
    chunk = max(1, 2**24 // n_items)  # 64 MiB of scores at a time
    hits, gain = 0, 0.0
    shown = np.zeros(n_items, dtype=bool)
    for start in range(0, len(users), chunk):
        u = users[start : start + chunk]
        top = top_k(scores(u), seen[u], k)
        match = top == targets[start : start + chunk, None]
        found = match.any(axis=1)
        hits += int(found.sum())
        gain += float((found / np.log2(match.argmax(axis=1) + 2)).sum())
        shown[top[top >= 0]] = True
    n = len(users)
    return RankingMetrics(
        hit_rate_at_k=hits / n, ndcg_at_k=gain / n, coverage=float(shown.sum()) / n_items
    )


def top_k(
    scores: npt.NDArray[np.float32], seen: scipy.sparse.csr_matrix, k: int
) -> npt.NDArray[np.int64]:
    """Item rows of the k best scores per row, best first, ties by item row, `seen` items
    excluded (-1 pads a row with fewer than k unseen items). Overwrites `scores`."""
    rows, cols = seen.nonzero()
    scores[rows, cols] = -np.inf
    n_items = scores.shape[1]
    k = min(k, n_items)
    cand = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(scores, cand, axis=1).min(axis=1)
    top = _order(scores, cand)
    # argpartition picks arbitrarily among items tied at the k-th score: those rows exactly.
    for r in np.flatnonzero((scores >= kth[:, None]).sum(axis=1) > k):
        top[r] = _order(scores[r : r + 1], np.arange(n_items)[None, :])[0, :k]
    return top


def _order(scores: npt.NDArray[np.float32], cand: npt.NDArray[np.intp]) -> npt.NDArray[np.int64]:
    cand_scores = np.take_along_axis(scores, cand, axis=1)
    order = np.lexsort((cand, -cand_scores), axis=1)[:, : cand.shape[1]]
    top = np.take_along_axis(cand, order, axis=1).astype(np.int64)
    top[np.take_along_axis(cand_scores, order, axis=1) == -np.inf] = -1
    return top


def factor_scorer(
    user_factors: npt.NDArray[np.float32], item_factors: npt.NDArray[np.float32]
) -> Scorer:
    """Inner products, as a version ranks user -> items (float32, as the worker scores)."""
    items = np.ascontiguousarray(item_factors, dtype=np.float32)
    users = np.asarray(user_factors, dtype=np.float32)
    return lambda u: users[u] @ items.T


def popularity_scorer(seen: scipy.sparse.csr_matrix) -> Scorer:
    """Every user gets the same ranking: the items' summed training weight."""
    popularity = np.asarray(seen.sum(axis=0), dtype=np.float32).ravel()
    return lambda u: np.tile(popularity, (len(u), 1))
