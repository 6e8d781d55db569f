"""Holdout evaluation (index_builder/evaluate.py) and training worth serving
(index_builder/tune.py): the holdout never reaches training, rankings on tiny known cases, noise
refused, structure learned, tuning within its budget."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from index_builder.evaluate import (
    factor_scorer,
    popularity_scorer,
    rank_metrics,
    split_holdout,
    sub_events,
    top_k,
    train_matrix,
)
from index_builder.synth import synth_interactions
from index_builder.train import Events, make_interactions
from index_builder.tune import AlsConfig, EvalOptions, WeakModel, train_evaluated

SMALL = AlsConfig(factors=16, iterations=8)


def _random_events(seed: int, timestamps: bool) -> Events:
    """Many repeated (user, item) pairs, users with one item, rows in no particular order."""
    rng = np.random.default_rng(seed)
    n = 3000
    users = rng.integers(0, 120, n)
    items = rng.integers(0, 40, n)  # few items: most pairs repeat
    ts = rng.integers(0, 500, n).astype(np.float64) if timestamps else None  # ties too
    return Events(users, items, rng.random(n) + 0.1, ts)


def _pairs(events: Events, rows: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(events.users[rows].tolist(), events.items[rows].tolist(), strict=True))


@pytest.mark.parametrize("seed", range(5))
def test_file_order_holdout_never_leaks_and_holds_each_users_newest_item(seed):
    events = _random_events(seed, timestamps=False)
    h = split_holdout(events, 40, max_users=10_000)
    assert h.rule == "file_order" and len(h.users) == len(np.unique(h.users)) > 50
    held = set(zip(h.users.tolist(), h.items.tolist(), strict=True))
    assert not held & _pairs(events, h.train_rows)  # no row of a held pair is trained on
    assert _pairs(events, ~h.train_rows) == held  # and nothing else is held out
    train = train_matrix(events, h.train_rows, (120, 40))
    assert (train[h.users, h.items] == 0).all()
    for u, i in held:  # the pair whose first row comes last, for a user with more to learn from
        rows = np.flatnonzero(events.users == u)
        first_seen = {
            int(it): r for r, it in reversed(list(zip(rows, events.items[rows], strict=True)))
        }
        assert max(first_seen, key=first_seen.__getitem__) == i and len(first_seen) >= 2


@pytest.mark.parametrize("seed", range(5))
def test_time_holdout_trains_only_on_the_past_and_targets_new_items(seed):
    events = _random_events(seed, timestamps=True)
    h = split_holdout(events, 40, fraction=0.2)
    assert h.rule == "time" and h.cutoff is not None and len(h.users) > 0
    ts = events.timestamps
    assert ts[h.train_rows].max() < h.cutoff <= ts[~h.train_rows].min()
    train = train_matrix(events, h.train_rows, (120, 40))
    assert (train[h.users, h.items] == 0).all()  # a target is new to its user
    assert (np.diff(train.indptr)[h.users] > 0).all()  # and the user has a past
    for u, i in zip(h.users, h.items, strict=True):  # the first new item after the cutoff
        later = np.flatnonzero((events.users == u) & ~h.train_rows)
        later = later[np.lexsort((later, ts[later]))]
        new = [it for it in events.items[later] if train[u, it] == 0]
        assert new[0] == i


def test_the_validation_holdout_is_inside_the_training_rows():
    events = _random_events(0, timestamps=False)
    h = split_holdout(events, 40)
    rest = sub_events(events, h.train_rows)
    v = split_holdout(rest, 40)
    assert _pairs(rest, ~v.train_rows) <= _pairs(events, h.train_rows)
    assert not _pairs(rest, np.ones(len(rest.users), bool)) & set(
        zip(h.users.tolist(), h.items.tolist(), strict=True)
    )


def test_a_sampled_holdout_keeps_the_other_users_pairs_in_training():
    events = _random_events(1, timestamps=False)
    h = split_holdout(events, 40, max_users=10, seed=3)
    assert len(h.users) == 10
    assert _pairs(events, ~h.train_rows) == set(
        zip(h.users.tolist(), h.items.tolist(), strict=True)
    )


def test_top_k_excludes_seen_items_breaks_ties_by_row_and_pads():
    scores = np.array([[1, 5, 5, 3, 5], [0, 0, 0, 0, 9]], dtype=np.float32)
    seen = sp.csr_matrix(np.array([[0, 1, 0, 0, 0], [1, 1, 1, 0, 0]]))
    assert top_k(scores.copy(), seen, 3).tolist() == [[2, 4, 3], [4, 3, -1]]
    assert top_k(scores.copy(), sp.csr_matrix((2, 5)), 2).tolist() == [[1, 2], [4, 0]]


def test_rank_metrics_known_answer():
    item_factors = np.eye(4, dtype=np.float32)
    user_factors = np.array([[3, 2, 0, 0], [0, 0, 1, 0.5], [0, 0, 0, 1]], dtype=np.float32)
    seen = sp.csr_matrix(np.array([[0, 0, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]]))
    users, targets = np.array([0, 1, 2]), np.array([1, 1, 3])
    m = rank_metrics(factor_scorer(user_factors, item_factors), seen, users, targets, k=2)
    # top 2: user 0 [0, 1] (hit, 2nd); user 1 [3, 0] (item 2 seen; 0 beats 1 on the tie: miss);
    # user 2 [3, 1] (item 0 seen; hit, 1st). Items shown: 0, 1, 3.
    assert m.hit_rate_at_k == pytest.approx(2 / 3)
    assert m.ndcg_at_k == pytest.approx((1 / np.log2(3) + 1) / 3)
    assert m.coverage == 0.75
    pop = rank_metrics(popularity_scorer(seen), seen, users, targets, k=2)
    # popularity [1, 0, 1, 0]: user 0 [0, 2] miss; user 1 [0, 1] hit, 2nd; user 2 [2, 1] miss.
    assert pop.hit_rate_at_k == pytest.approx(1 / 3)
    assert pop.ndcg_at_k == pytest.approx(1 / np.log2(3) / 3)
    assert pop.coverage == 0.75


def _noise_log(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Users pick items from one popularity-skewed distribution: nothing personal to learn."""
    rng = np.random.default_rng(seed)
    popularity = 1 / np.arange(1, 401) ** 0.9
    users = np.repeat(np.arange(600), 15)
    items = rng.choice(400, size=len(users), p=popularity / popularity.sum())
    return users, items


@pytest.mark.parametrize("seed", [0, 1])
def test_a_random_noise_log_is_refused_as_weaker_than_popularity(seed):
    users, items = _noise_log(seed)
    interactions = make_interactions(users, items)
    with pytest.raises(WeakModel, match=r"hit rate@10 0\.\d{4} vs popularity 0\.\d{4}") as info:
        train_evaluated(interactions, SMALL, seed=seed)
    assert "--allow-weak-model" in str(info.value) and "\n" not in str(info.value)
    _, params = train_evaluated(interactions, SMALL, seed=seed, allow_weak=True)
    assert params.evaluation is not None and not params.evaluation.beats_popularity


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_log_with_planted_structure_is_learned(seed):
    log = synth_interactions(500, 800, 16, 20, seed=seed, n_clusters=16)
    interactions = make_interactions(*log)
    factors, params = train_evaluated(interactions, SMALL, seed=seed)
    e = params.evaluation
    assert e is not None and e.beats_popularity and e.holdout == "file_order"
    assert e.holdout_users == 500 and params.tuning is None
    assert e.model.hit_rate_at_k > max(
        3 * e.popularity.hit_rate_at_k, e.popularity.hit_rate_at_k + 0.1
    )
    assert e.model.coverage > e.popularity.coverage
    # The published model is trained on everything, the holdout included.
    assert params.n_interactions == interactions.n_interactions > e.train_interactions
    assert factors.user_factors.shape == (500, 16)


def test_timestamps_choose_the_time_holdout():
    users, items, weights = synth_interactions(300, 400, 16, 20, seed=4, n_clusters=16)
    ts = np.random.default_rng(0).random(len(users))
    _, params = train_evaluated(make_interactions(users, items, weights, ts), SMALL, seed=0)
    e = params.evaluation
    assert e is not None and e.holdout == "time" and e.cutoff is not None
    assert float(np.quantile(ts, 0.75)) < e.cutoff < float(np.quantile(ts, 0.85))


def test_tuning_records_its_curve_and_chooses_the_best_point():
    interactions = make_interactions(*synth_interactions(300, 400, 16, 20, seed=6, n_clusters=16))
    _, params = train_evaluated(interactions, SMALL, seed=0, tune="--tune", budget_s=600)
    t = params.tuning
    assert t is not None and t.reason == "--tune" and t.stopped == "grid_done"
    assert len(t.curve) >= 10 and t.validation_users > 0
    assert {p.weighting for p in t.curve} == {"raw", "bm25", "tfidf"}
    best = max(t.curve, key=lambda p: (p.hit_rate_at_k, p.ndcg_at_k))
    chosen = (params.factors, params.regularization, params.alpha, params.iterations)
    assert chosen == (best.factors, best.regularization, best.alpha, best.iterations)
    assert params.weighting == best.weighting


def test_tuning_stops_at_its_budget():
    interactions = make_interactions(*synth_interactions(300, 400, 16, 20, seed=6, n_clusters=16))
    _, params = train_evaluated(interactions, SMALL, seed=0, tune="--tune", budget_s=1e-3)
    t = params.tuning
    assert t is not None and t.stopped == "budget" and len(t.curve) == 1  # the start, always
    assert params.factors == SMALL.factors


def test_a_log_with_nothing_to_hold_out_is_trained_without_evaluation():
    interactions = make_interactions(["u1", "u2", "u3"], ["i1", "i2", "i1"])
    _, params = train_evaluated(interactions, AlsConfig(factors=2, iterations=2))
    assert params.evaluation is None


def test_evaluation_options_sample_the_users():
    interactions = make_interactions(*synth_interactions(300, 400, 16, 20, seed=6, n_clusters=16))
    _, params = train_evaluated(
        interactions, SMALL, options=EvalOptions(max_users=50, seed=1), allow_weak=True
    )
    assert params.evaluation is not None and params.evaluation.holdout_users == 50


def test_a_log_whose_rows_share_one_time_has_no_past_to_train_on():
    events = _random_events(2, timestamps=True)
    flat = Events(events.users, events.items, events.weights, np.zeros(len(events.users)))
    h = split_holdout(flat, 40)
    assert h.rule == "time" and not h.train_rows.any() and len(h.users) == 0
