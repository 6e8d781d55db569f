"""max_per: the greedy walk, and the widening search over a serving path that may miss items,
against the naive constrained top-k (every item scored, walked in score order)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from query_engine import diversity
from query_engine.diversity import MaxPer
from query_engine.vectors import top_k


def naive(scores, codes, n, k, excluded=()):
    """The exact constrained top-k, one item at a time."""
    taken, counts = [], {}
    for row in top_k(scores, len(scores)).tolist():
        if row in excluded:
            continue
        c = int(codes[row])
        if c >= 0 and counts.get(c, 0) >= n:
            continue
        counts[c] = counts.get(c, 0) + 1
        taken.append(row)
        if len(taken) == k:
            break
    return taken


def exact_search(scores):
    def run(fetch, exact):
        best = top_k(scores, fetch)
        return best, scores[best]

    return run


def test_pick_takes_at_most_n_per_value_in_order():
    codes = np.array([0, 0, 0, 1, -1, 1, 1, 2], np.int32)
    rows = np.arange(8)
    assert MaxPer(codes, 1).pick(rows, 10).tolist() == [0, 3, 4, 7]
    assert MaxPer(codes, 2).pick(rows, 10).tolist() == [0, 1, 3, 4, 5, 7]
    assert MaxPer(codes, 1).pick(rows[::-1], 4).tolist() == [0, 1, 3, 5]  # rows 7, 6, 4, 2
    assert MaxPer(codes, 1).pick(np.array([], np.int64), 3).tolist() == []


@settings(max_examples=60, deadline=None)
@given(
    n_items=st.integers(5, 300),
    n_values=st.integers(1, 12),
    n=st.integers(1, 3),
    k=st.integers(1, 20),
    seed=st.integers(0, 10_000),
)
def test_top_k_equals_the_naive_constrained_top_k(n_items, n_values, n, k, seed):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=n_items).astype(np.float32)
    codes = rng.integers(-1, n_values, n_items).astype(np.int32)
    excluded = rng.choice(n_items, min(3, n_items), replace=False)
    rows, got = diversity.top_k(exact_search(scores), k, MaxPer(codes, n), excluded, n_items)
    assert rows.tolist() == naive(scores, codes, n, k, set(excluded.tolist()))
    np.testing.assert_array_equal(got, scores[rows])


def test_a_serving_path_that_misses_is_widened_then_answered_exactly():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=2000).astype(np.float32)
    codes = np.zeros(2000, np.int32)  # one value: n=1 allows a single item ...
    codes[rng.choice(2000, 9, replace=False)] = np.arange(1, 10)  # ... plus nine rare ones
    calls = []

    def lossy(fetch, exact):
        calls.append((fetch, exact))
        best = top_k(scores, fetch)
        if not exact:  # the index finds only the value-0 items
            best = best[codes[best] == 0]
        return best, scores[best]

    rows, _ = diversity.top_k(lossy, 10, MaxPer(codes, 1), np.empty(0, np.int64), 2000)
    assert rows.tolist() == naive(scores, codes, 1, 10)
    # Each index search took one item of ten: the next asks for 15x more (1.5 x 10 / 1), until
    # the index path has had its rounds or covered the catalogue; then the exact path.
    assert calls[:3] == [(10, False), (150, False), (2000, False)] and calls[-1] == (2000, True)


def test_a_constraint_that_cannot_be_met_returns_what_can_be():
    scores = np.linspace(1, 0, 50).astype(np.float32)
    codes = np.arange(50, dtype=np.int32) % 3  # three values
    rows, _ = diversity.top_k(exact_search(scores), 10, MaxPer(codes, 2), np.array([0]), 50)
    assert rows.tolist() == [1, 2, 3, 4, 5, 6]  # two of each value; 0 excluded


def test_max_per_of_refuses_what_it_cannot_count_by():
    from query_engine.attributes import ItemAttributes
    from query_engine.selection import FilterError

    with pytest.raises(FilterError, match="no item attributes"):
        diversity.max_per_of(None, "brand", 1)
    with pytest.raises(FilterError, match="unknown attribute 'brand'"):
        diversity.max_per_of(ItemAttributes(3, [], []), "brand", 1)
