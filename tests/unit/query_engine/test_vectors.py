import numpy as np
import pytest

from query_engine.vectors import (
    augment_items,
    augment_query,
    cosine_scores,
    exact_cosine_top_k,
    exact_inner_product_top_k,
    recall_at_k,
    top_k,
)


def _skewed(rng, n, k):
    return (rng.standard_normal((n, k)) * rng.lognormal(0, 0.8, size=(n, 1))).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_augmentation_preserves_inner_products_and_equalizes_norms(seed):
    rng = np.random.default_rng(seed)
    items, queries = _skewed(rng, 500, 16), rng.standard_normal((20, 16)).astype(np.float32)
    aug, max_norm = augment_items(items)
    assert aug.shape == (500, 17)
    assert max_norm == pytest.approx(np.linalg.norm(items, axis=1).max(), rel=1e-6)
    np.testing.assert_allclose(np.linalg.norm(aug, axis=1), max_norm, rtol=1e-4)
    for q in queries:
        np.testing.assert_allclose(aug @ augment_query(q), items @ q, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", [10, 11, 12, 13, 14])
def test_max_inner_product_is_the_nearest_neighbour_in_augmented_space(seed):
    rng = np.random.default_rng(seed)
    items = _skewed(rng, 2000, 12)
    aug, _ = augment_items(items)
    for q in rng.standard_normal((50, 12)).astype(np.float32):
        q_aug = augment_query(q)
        nearest = np.argmin(np.linalg.norm(aug - q_aug, axis=1))
        assert nearest == np.argmax(items @ q)
        # the whole top-10 agrees, not just the first
        by_distance = np.argsort(np.linalg.norm(aug - q_aug, axis=1))[:10]
        np.testing.assert_array_equal(by_distance, exact_inner_product_top_k(items, q, 10))


def test_top_k_orders_best_first_and_breaks_ties_by_index():
    scores = np.array([0.5, 0.9, 0.1, 0.9, 0.7])
    np.testing.assert_array_equal(top_k(scores, 3), [1, 3, 4])
    np.testing.assert_array_equal(top_k(scores, 10), [1, 3, 4, 0, 2])
    assert top_k(scores, 0).size == 0


def test_cosine_top_k_excludes_the_query_item_and_handles_zero_vectors():
    items = np.array([[1, 0], [0.9, 0.1], [0, 1], [0, 0]], dtype=np.float32)
    norms = np.linalg.norm(items, axis=1).astype(np.float32)
    np.testing.assert_array_equal(exact_cosine_top_k(items, norms, items[0], 2, exclude=0), [1, 2])
    assert np.isfinite(cosine_scores(items, norms, items[0])).all()


def test_recall_at_k():
    assert recall_at_k([1, 2, 3], [3, 2, 9]) == pytest.approx(2 / 3)
    assert recall_at_k([], [1]) == 0.0
