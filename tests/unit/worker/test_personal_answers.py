"""recommend by user_id with the user's recent interactions (worker/answer.py, no services)."""

import numpy as np

from query_engine.confidence import history_confidences
from query_engine.personalize import HistoryEvent, Personalization
from query_engine.vectors import exact_inner_product_top_k, fold_in
from schemas.events import RecommendRequest
from worker.answer import Policy, answer

HISTORY = [HistoryEvent(1.0, "i5"), HistoryEvent(2.0, "i42", 2.0), HistoryEvent(3.0, "nope")]


def _recent_vector(version, small_factors):
    rows, conf = history_confidences(version.fold_in, [5, 42], [1.0, 2.0])
    return fold_in(
        version.gramian,
        small_factors.item_factors[rows],
        version.manifest.fold_in.regularization,
        conf,
    )


def test_an_unknown_user_with_events_gets_items_from_them_not_the_cold_start(
    version, small_factors
):
    request = RecommendRequest(request_id="r", user_id="stranger", k=10)
    cold = answer(request, version, "w")
    assert cold.fallback == "cold_start"
    warm = answer(request, version, "w", history=HISTORY)
    assert warm.fallback is None and warm.history_events == 3
    truth = exact_inner_product_top_k(
        small_factors.item_factors, _recent_vector(version, small_factors), 10
    )
    assert [i.item_id for i in warm.items] == [f"i{t}" for t in truth]
    assert all(i.score is not None for i in warm.items)


def test_a_known_user_blends_factors_and_events_as_the_policy_says(version, small_factors):
    request = RecommendRequest(request_id="r", user_id="u3", k=10)
    u = small_factors.user_factors[3]
    for how, query in [
        (Personalization("static"), u),
        (Personalization("recent"), _recent_vector(version, small_factors)),
        (Personalization("blend", 0.5), 0.5 * u + 0.5 * _recent_vector(version, small_factors)),
    ]:
        reply = answer(request, version, "w", Policy(personalization=how), history=HISTORY)
        truth = exact_inner_product_top_k(small_factors.item_factors, query.astype(np.float32), 10)
        assert [i.item_id for i in reply.items] == [f"i{t}" for t in truth], how


def test_exclude_seen_leaves_out_the_history_items(version):
    history = [HistoryEvent(1.0, "i5"), HistoryEvent(2.0, "i42")]
    plain = RecommendRequest(request_id="r", user_id="stranger", k=20)
    got = {i.item_id for i in answer(plain, version, "w", history=history).items}
    assert {"i5", "i42"} & got, "the fold-in of two items recommends at least one of them"
    seen = plain.model_copy(update={"exclude_seen": True})
    assert not {"i5", "i42"} & {
        i.item_id for i in answer(seen, version, "w", history=history).items
    }
    by_setting = answer(plain, version, "w", Policy(exclude_history=True), history=history)
    assert not {"i5", "i42"} & {i.item_id for i in by_setting.items}


def test_explain_is_refused_for_a_user_id_even_with_a_history(version):
    request = RecommendRequest(request_id="r", user_id="u3", k=5, explain=True)
    reply = answer(request, version, "w", history=HISTORY)
    assert reply.explain_refused and all(i.because is None for i in reply.items)


def test_the_other_options_apply_to_a_personalised_vector(version, small_factors):
    allowed = [f"i{n}" for n in range(0, 300, 3)]
    request = RecommendRequest(
        request_id="r", user_id="u3", k=10, allow_items=allowed, exclude_items=["i42"]
    )
    reply = answer(request, version, "w", history=HISTORY)
    got = [i.item_id for i in reply.items]
    assert reply.history_events == 3 and len(got) == 10
    assert set(got) <= set(allowed) - {"i42"}
    rows = [n for n in range(0, 300, 3) if n != 42]
    unconstrained = answer(
        RecommendRequest(request_id="r", user_id="u3", k=300), version, "w", history=HISTORY
    )
    ranked = [i.item_id for i in unconstrained.items if int(i.item_id[1:]) in rows]
    assert got == ranked[:10], "the allowed items in the personalised order"
