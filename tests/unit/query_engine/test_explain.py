"""Known answers: explain_scores is implicit's AlternatingLeastSquares.explain, and it sums to the
score of the fold-in user."""

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from query_engine.vectors import explain_scores, fold_in, item_gramian

N_ITEMS, K = 60, 6


def _implicit_model(items, regularization, alpha):
    import implicit.cpu.als

    model = implicit.cpu.als.AlternatingLeastSquares(
        factors=K, regularization=regularization, alpha=alpha
    )
    model.item_factors = items
    return model


@pytest.mark.parametrize(("regularization", "alpha"), [(0.05, 2.0), (1.0, 1.0), (0.01, 40.0)])
def test_explain_scores_equal_implicits_explain(regularization, alpha):
    rng = np.random.default_rng(7)
    items = rng.normal(0, 0.5, (N_ITEMS, K)).astype(np.float32)
    seen = [3, 17, 42, 8, 55]
    targets = [0, 9, 21, 42]
    model = _implicit_model(items, regularization, alpha)
    row = csr_matrix((np.ones(len(seen), np.float32), ([0] * len(seen), seen)), shape=(1, N_ITEMS))
    terms = explain_scores(item_gramian(items), items[seen], items[targets], regularization, alpha)
    for t, target in enumerate(targets):
        total, top, _ = model.explain(0, row, target, N=len(seen))
        expected = dict(top)
        got = {seen[j]: terms[t, j] for j in range(len(seen))}
        assert [i for i, _ in top] == sorted(got, key=lambda i: -got[i])  # same order
        for item, value in expected.items():
            assert got[item] == pytest.approx(value, rel=1e-4, abs=1e-6)
        assert terms[t].sum() == pytest.approx(total, rel=1e-4)


def test_contributions_sum_to_the_fold_in_score_within_1e_4():
    rng = np.random.default_rng(3)
    items = rng.normal(0, 0.4, (500, 32)).astype(np.float32)
    seen = rng.choice(500, 20, replace=False)
    gram = item_gramian(items)
    user = fold_in(gram, items[seen], 0.1, 5.0)
    scores = items @ user
    targets = np.argsort(-scores)[:10]
    terms = explain_scores(gram, items[seen], items[targets], 0.1, 5.0)
    np.testing.assert_allclose(terms.sum(axis=1), scores[targets], rtol=1e-4)


def test_one_seen_item_explains_the_whole_score():
    rng = np.random.default_rng(1)
    items = rng.normal(0, 1, (30, 4)).astype(np.float32)
    gram = item_gramian(items)
    user = fold_in(gram, items[[5]], 0.5, 3.0)
    terms = explain_scores(gram, items[[5]], items[[0, 1, 2]], 0.5, 3.0)
    assert terms.shape == (3, 1)
    np.testing.assert_allclose(terms[:, 0], items[[0, 1, 2]] @ user, rtol=1e-5)
