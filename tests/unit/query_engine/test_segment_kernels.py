"""The fresh segment's compiled reads against their definitions in numpy."""

import numpy as np
import pytest

from query_engine import segment_kernels
from query_engine.vectors import unit_rows


def _table(rng, n, width):
    """An exact kNN table of random unit rows: (factors, rows, last scores)."""
    factors = rng.normal(size=(n, 8)).astype(np.float32)
    unit = unit_rows(factors)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    rows = np.argsort(-sims, axis=1)[:, :width].astype(np.int32)
    last = np.take_along_axis(sims, rows[:, -1:].astype(np.int64), axis=1)[:, 0]
    return factors, rows, last.astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_reverse_rows_lists_every_item_whose_row_holds_a_row(seed):
    rng = np.random.default_rng(seed)
    _, rows, _ = _table(rng, 200, 6)
    rows[::7, -1] = -1  # a short row (NN-descent can leave one): skipped
    offsets, owners = segment_kernels.reverse_rows(rows)
    for v in range(200):
        holders = [i for i in range(200) if v in rows[i].tolist()]
        assert owners[offsets[v] : offsets[v + 1]].tolist() == holders


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_fresh_item_is_listed_under_each_item_whose_read_could_find_it(seed):
    """Under item i iff i or an item of i's table row is in the fresh item's row, and its
    cosine with i beats i's last table score (a request's floor is never below it)."""
    rng = np.random.default_rng(seed)
    n = 300
    factors, rows, last = _table(rng, n, 8)
    norms = np.linalg.norm(factors, axis=1).astype(np.float32)
    offsets, owners = segment_kernels.reverse_rows(rows)
    for _ in range(10):
        vector = rng.normal(size=8).astype(np.float32)
        cos = unit_rows(factors) @ (vector / np.linalg.norm(vector))
        row = np.argsort(-cos)[:10].astype(np.int64)
        unit = (vector / np.linalg.norm(vector)).astype(np.float32)
        got, cosines = segment_kernels.listed_under(
            offsets, owners, row, factors, norms, last, unit
        )
        np.testing.assert_allclose(cosines, cos[got], rtol=1e-5)  # as a request scores them
        near = set(row.tolist())
        truth = [
            i
            for i in range(n)
            if (i in near or near & set(rows[i].tolist())) and cos[i] > last[i] + 1e-4
        ]
        assert set(truth) <= set(got.tolist())
        assert got.tolist() == sorted(set(got.tolist()))  # ascending, each once
        assert all(i in near or near & set(rows[i].tolist()) for i in got.tolist())
        assert all(cos[i] > last[i] - 1e-3 for i in got.tolist())  # the screen's margin only


@pytest.mark.parametrize("seed", [0, 1])
def test_screened_ranked_keeps_the_rows_above_the_floor_best_first(seed):
    """The items not placed yet, as a request reads them: exactly those whose cosine beats the
    floor, by decreasing cosine, ties by row (two rows share a vector)."""
    rng = np.random.default_rng(seed)
    units = unit_rows(rng.normal(size=(50, 8)).astype(np.float32))
    units[7] = units[3]  # a tie: row 3 first
    query = rng.normal(size=8).astype(np.float32) * 3
    rows = np.asarray([3, 7, *range(10, 40)], np.int64)
    cos = units[rows] @ query / np.linalg.norm(query)
    for floor in (-1.0, float(np.median(cos)), float(cos.max())):
        got, scores = segment_kernels.screened_ranked(rows, units, query, floor)
        passing = rows[cos > floor + 1e-6]
        assert set(passing.tolist()) <= set(got.tolist())
        assert all(c > floor - 1e-6 for c in scores.tolist())
        order = sorted(zip((-scores).tolist(), got.tolist(), strict=True))
        assert got.tolist() == [r for _, r in order]
        np.testing.assert_allclose(scores, cos[[rows.tolist().index(r) for r in got]], rtol=1e-5)
