"""recommend's norm-ordered scan of the fresh segment: exact against brute force, while it
reads only the rows the norm bound lets through."""

import numpy as np
import pytest

from query_engine import segment_order
from query_engine.segment_order import FIRST_BLOCK, NormOrder

DIM = 16


def _catalogue(rng, n):
    """Skewed norms, as matrix-factorization factors have: a few long vectors, a long tail."""
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    return x * rng.lognormal(0.0, 0.6, size=(n, 1)).astype(np.float32)


def _truth(factors, live, query, k, floor, allowed):
    rows = np.flatnonzero(live & allowed)
    scores = factors[rows] @ query
    rows, scores = rows[scores > floor], scores[scores > floor]
    best = np.lexsort((rows, -scores))[:k]
    return rows[best].tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_is_brute_force_above_the_floor_with_a_tail_removals_and_a_filter(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    factors = _catalogue(rng, n)
    norms = np.linalg.norm(factors, axis=1)
    live = np.ones(n, np.bool_)
    order = NormOrder(DIM)
    order.sort(factors, norms, live)
    # After the sort: 40 rows get new vectors (some much longer), 30 are removed.
    for row in rng.choice(n, 40, replace=False).tolist():
        factors[row] = rng.normal(size=DIM) * rng.uniform(0.5, 4.0)
        norms[row] = np.linalg.norm(factors[row])
        order.changed(row)
    for row in rng.choice(n, 30, replace=False).tolist():
        live[row] = False
        order.changed(row)
    keep = rng.random(n) < 0.5
    for j in range(30):
        query = rng.normal(size=DIM).astype(np.float32)
        k = int(rng.integers(1, 40))
        allowed = keep if j % 2 else np.ones(n, np.bool_)
        everything = np.sort(factors[live] @ query)[::-1]
        # Floors between two scores: the kernel scores in float64, numpy's product in float32,
        # and a floor equal to an item's score would test the last bit of each.
        between = [(float(everything[i]) + float(everything[i + 1])) / 2 for i in (k, 3 * k)]
        floor = [-np.inf, *between][j % 3]
        rows, scores = order.top(factors, query, k, floor, lambda r, a=allowed: live[r] & a[r])
        assert rows.tolist() == _truth(factors, live, query, k, floor, allowed)
        np.testing.assert_allclose(scores, factors[rows] @ query, rtol=1e-5)


def test_the_scan_reads_the_rows_whose_norm_bound_beats_the_floor():
    """With a floor, exactly the rows whose bound ||q|| * ||x|| beats it are read, in one
    product (the floor only rises as items are found); with none, block by block until k are
    found and the next row's bound cannot beat the k-th; k past the rows reads every row."""
    rng = np.random.default_rng(5)
    n = 20 * FIRST_BLOCK
    factors = _catalogue(rng, n)
    order = NormOrder(DIM)
    order.sort(factors, np.linalg.norm(factors, axis=1), np.ones(n, np.bool_))
    query = rng.normal(size=DIM).astype(np.float32)
    reach = float(np.linalg.norm(query)) * (1 + segment_order.BOUND_MARGIN)
    every = np.ones(n, np.bool_)
    for j in (0, 99, FIRST_BLOCK, 3 * FIRST_BLOCK + 7):  # a floor between rows j and j + 1
        floor = float(order.norms[j] + order.norms[j + 1]) / 2 * reach
        order.top(factors, query, 10, floor, lambda r: every[r])
        assert order.read == j + 1
    order.top(factors, query, 10, -np.inf, lambda r: every[r])
    assert FIRST_BLOCK <= order.read < n
    order.top(factors, query, n, -np.inf, lambda r: every[r])
    assert order.read == n


def test_the_tail_is_sorted_in_once_it_outgrows_an_eighth():
    rng = np.random.default_rng(3)
    n = 1000
    factors = _catalogue(rng, n)
    norms = np.linalg.norm(factors, axis=1)
    order = NormOrder(DIM)
    order.sort(factors, norms, np.ones(n, np.bool_))
    for row in range(max(segment_order.MIN_TAIL, n // 8)):
        order.changed(row)
    assert not order.outdated()
    order.changed(n - 1)
    assert order.outdated()
    order.sort(factors, norms, np.ones(n, np.bool_))
    assert not order.outdated()
    assert (np.diff(order.norms) <= 0).all()
