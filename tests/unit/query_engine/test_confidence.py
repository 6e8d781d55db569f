"""Known answers for query_engine.confidence: each weighting's formula on hand-picked numbers, and
the fold-in of confidences <= 0 as implicit's own (pure Python) least-squares step does it."""

import math

import numpy as np
import pytest

from query_engine.confidence import FoldInWeights, fold_in_confidences, item_confidences
from query_engine.vectors import explain_scores, fold_in, item_gramian


def test_raw_is_alpha_times_count_and_keeps_the_rows_as_given():
    raw = FoldInWeights("raw", alpha=5.0)
    np.testing.assert_array_equal(item_confidences(raw, [3, 1], [1.0, 2.0]), [5.0, 10.0])
    rows, confidence = fold_in_confidences(raw, np.array([4, 2, 4]))
    assert rows.tolist() == [4, 2, 4] and confidence == 5.0  # as annrec always folded in


def test_tfidf_is_sqrt_count_times_the_users_idf():
    w = FoldInWeights("tfidf", alpha=2.0, idf_items=100)
    idf = math.log(100) - math.log1p(3)  # the user has 3 distinct items
    got = item_confidences(w, [0, 5, 9], [1.0, 4.0, 9.0])
    np.testing.assert_allclose(got, [2 * idf, 2 * 2 * idf, 2 * 3 * idf], rtol=1e-6)


def test_bm25_normalizes_by_the_items_length():
    lengths = np.array([10.0, 30.0, 20.0], dtype=np.float32)  # mean 20
    w = FoldInWeights("bm25", 1.0, 50, 100.0, 0.8, item_lengths=lengths, average_length=20.0)
    idf = math.log(50) - math.log1p(2)
    norm = [0.2 + 0.8 * 10 / 20, 0.2 + 0.8 * 30 / 20]
    want = [c * 101 / (100 * n + c) * idf for c, n in zip([1.0, 3.0], norm, strict=True)]
    np.testing.assert_allclose(item_confidences(w, [0, 1], [1.0, 3.0]), want, rtol=1e-6)


def test_weighted_fold_in_counts_repeats_and_keeps_first_seen_order():
    w = FoldInWeights("tfidf", alpha=1.0, idf_items=1000)
    rows, confidence = fold_in_confidences(w, np.array([7, 3, 7, 7, 1]))
    assert rows.tolist() == [7, 3, 1]
    np.testing.assert_allclose(confidence, item_confidences(w, [7, 3, 1], [3, 1, 1]))


def test_incomplete_weights_are_refused():
    with pytest.raises(ValueError, match="item count"):
        FoldInWeights("tfidf", 1.0)
    with pytest.raises(ValueError, match="lengths"):
        FoldInWeights("bm25", 1.0, idf_items=10)


def test_confidences_at_most_zero_fold_in_as_implicits_least_squares():
    """A user holding nearly every item has idf <= 0: implicit counts |c| in A and nothing in b."""
    from implicit.cpu.als import user_factor
    from scipy.sparse import csr_matrix

    rng = np.random.default_rng(0)
    items = rng.normal(size=(6, 3)).astype(np.float64)
    seen, conf = [0, 2, 5], np.array([1.5, -0.7, 0.0])
    cui = csr_matrix((conf, ([0, 0, 0], seen)), shape=(1, 6))
    cui.data[2] = 0.0  # an explicit zero, as a weighted matrix stores it
    want = user_factor(items, items.T @ items, cui, 0, 0.1, 3)
    got = fold_in(item_gramian(items), items[seen], 0.1, conf)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    terms = explain_scores(item_gramian(items), items[seen], items, 0.1, conf)
    np.testing.assert_allclose(terms.sum(axis=1), items @ got, rtol=1e-4, atol=1e-5)
