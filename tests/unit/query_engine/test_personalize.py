"""The combination of a user's long-term factors with their recent events (pure numpy)."""

import numpy as np
import pytest

from query_engine.confidence import FoldInWeights, history_confidences
from query_engine.personalize import (
    HistoryEvent,
    Personalization,
    bound_history,
    personal_vector,
)
from query_engine.vectors import fold_in, item_gramian

RNG = np.random.default_rng(7)
ITEMS = RNG.standard_normal((40, 6)).astype(np.float32)
GRAMIAN = item_gramian(ITEMS)
U = RNG.standard_normal(6).astype(np.float32)
REG = 0.1
RAW = FoldInWeights("raw", alpha=2.0)
ROWS = np.array([3, 9, 3, 17])
WEIGHTS = np.array([1.0, 2.0, 1.0, 0.5])


def _vector(how, long_term=U, rows=ROWS, weights=WEIGHTS):
    return personal_vector(long_term, rows, weights, ITEMS, GRAMIAN, REG, RAW, how)


def test_repeated_items_are_one_row_with_their_weights_summed():
    rows, conf = history_confidences(RAW, ROWS, WEIGHTS)
    assert rows.tolist() == [3, 9, 17]
    np.testing.assert_allclose(conf, [2.0 * 2.0, 2.0 * 2.0, 2.0 * 0.5])


def _loss_minimum(rows, conf, prior, beta):
    """The minimum of sum_i c_i (p_i - x.y_i)^2 + reg |x|^2 + beta |x - prior|^2 over every item
    (c = 1, p = 0 for items not seen), as one weighted least-squares problem, solved by lstsq."""
    c = np.ones(len(ITEMS))
    p = np.zeros(len(ITEMS))
    c[rows], p[rows] = conf, 1.0
    k = ITEMS.shape[1]
    a = np.vstack(
        [np.sqrt(c)[:, None] * ITEMS, np.sqrt(REG) * np.eye(k), np.sqrt(beta) * np.eye(k)]
    )
    b = np.concatenate([np.sqrt(c) * p, np.zeros(k), np.sqrt(beta) * prior])
    return np.linalg.lstsq(a.astype(np.float64), b, rcond=None)[0]


def test_recent_is_the_als_fold_in_of_the_events_alone():
    rows, conf = history_confidences(RAW, ROWS, WEIGHTS)
    got = _vector(Personalization("recent"))
    np.testing.assert_allclose(got, fold_in(GRAMIAN, ITEMS[rows], REG, conf), rtol=1e-6)
    np.testing.assert_allclose(got, _loss_minimum(rows, conf, U, 0.0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("beta", [0.5, 5.0, 50.0])
def test_prior_minimises_the_als_loss_with_the_factors_as_prior(beta):
    rows, conf = history_confidences(RAW, ROWS, WEIGHTS)
    got = _vector(Personalization("prior", beta / REG))  # the weight is beta / regularization
    np.testing.assert_allclose(got, _loss_minimum(rows, conf, U, beta), rtol=1e-4, atol=1e-5)


def test_a_strong_prior_stays_near_the_factors_a_weak_one_near_the_events():
    recent = _vector(Personalization("recent"))
    strong, weak = _vector(Personalization("prior", 1e7)), _vector(Personalization("prior", 1e-7))
    np.testing.assert_allclose(strong, U, atol=1e-3)
    np.testing.assert_allclose(weak, recent, atol=1e-4)


def test_blend_is_the_weighted_mean_of_factors_and_fold_in():
    recent = _vector(Personalization("recent"))
    got = _vector(Personalization("blend", 0.25))
    np.testing.assert_allclose(got, 0.75 * U + 0.25 * recent, rtol=1e-6)


def test_static_keeps_the_factors_and_no_history_keeps_them_in_every_mode():
    np.testing.assert_array_equal(_vector(Personalization("static")), U)
    for how in (Personalization("recent"), Personalization("blend"), Personalization("prior", 1)):
        empty = np.empty(0, np.int64)
        np.testing.assert_array_equal(_vector(how, rows=empty, weights=np.empty(0)), U)


def test_a_user_without_factors_gets_the_fold_in_in_every_mode_and_none_without_events():
    recent = _vector(Personalization("recent"))
    for how in (Personalization("static"), Personalization("blend"), Personalization("prior", 1)):
        np.testing.assert_allclose(_vector(how, long_term=None), recent, rtol=1e-6)
    assert _vector(Personalization("blend"), None, np.empty(0, np.int64), np.empty(0)) is None


def test_weights_out_of_range_are_refused():
    with pytest.raises(ValueError, match="blend"):
        Personalization("blend", 1.5)
    with pytest.raises(ValueError, match="prior"):
        Personalization("prior", -1)


def test_bounds_keep_the_newest_events_not_older_than_the_age_limit():
    events = [HistoryEvent(float(t), f"i{t}") for t in (5, 1, 9, 3, 7, 2)]
    kept = bound_history(events, max_length=3, oldest=2.0)
    assert [e.item_id for e in kept] == ["i5", "i7", "i9"]
    assert [e.item_id for e in bound_history(events, 10, oldest=6.0)] == ["i7", "i9"]
