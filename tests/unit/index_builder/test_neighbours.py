"""Building a version's neighbour table: exact on small catalogues, NN-descent above, every row
rescored exactly and sorted."""

import numpy as np
import pytest

from index_builder.neighbours import build_neighbour_table
from index_builder.synth import synth_factors
from query_engine.vectors import cosine_scores, recall_at_k, top_k


@pytest.fixture(scope="module")
def factors():
    return synth_factors(n_items=3000, n_users=5, dim=16, n_clusters=12, seed=5).item_factors


def exact_rows(factors, row, k):
    norms = np.linalg.norm(factors, axis=1).astype(np.float32)
    scores = cosine_scores(factors, norms, factors[row])
    scores[row] = -np.inf
    return top_k(scores, k)


def check_rows(factors, table):
    norms = np.linalg.norm(factors, axis=1).astype(np.float32)
    n = len(factors)
    assert table.rows.dtype == np.int32 and table.scores.dtype == np.float32
    assert not (table.rows == np.arange(n)[:, None]).any()  # never itself
    assert (np.diff(table.scores, axis=1) <= 0).all()  # best first
    for row in range(0, n, 97):
        neighbours = table.rows[row]
        assert len(np.unique(neighbours)) == table.width
        want = cosine_scores(factors[neighbours], norms[neighbours], factors[row])
        np.testing.assert_allclose(table.scores[row], want, rtol=1e-5, atol=1e-6)


def test_the_exact_table_is_the_exact_graph(factors):
    table, method = build_neighbour_table(factors, 10)
    assert method == "exact" and table.rows.shape == (3000, 10)
    check_rows(factors, table)
    for row in range(0, 3000, 131):
        np.testing.assert_array_equal(table.rows[row], exact_rows(factors, row, 10))


def test_nndescent_finds_nearly_every_true_neighbour(factors):
    table, method = build_neighbour_table(factors, 16, exact_max_items=0, seed=3)
    assert method == "nndescent" and table.rows.shape == (3000, 16)
    check_rows(factors, table)
    recalls = [
        recall_at_k(table.rows[row, :10], exact_rows(factors, row, 10)) for row in range(0, 3000, 7)
    ]
    assert np.mean(recalls) >= 0.97


def test_the_width_is_capped_by_the_catalogue():
    tiny = synth_factors(n_items=5, n_users=1, dim=4, seed=1).item_factors
    table, _ = build_neighbour_table(tiny, 32)
    assert table.rows.shape == (5, 4)
    one, _ = build_neighbour_table(tiny[:1], 32)
    assert one.rows.shape == (1, 0)
