"""Several models in one worker: each request answered by its model, its pin or its experiment
arm (worker/index_store.py's snapshot, worker/routing.py), or refused with the reason."""

from collections import Counter

import pytest

from adapters.version_storage import ModelCatalog
from index_builder import storage
from index_builder.publish import BuildOptions, publish_version
from index_builder.synth import synth_factors
from query_engine.vectors import exact_inner_product_top_k
from schemas.events import RecommendRequest, Reply, ScoredItem, SimilarItemsRequest
from schemas.experiments import Arm, Experiment, Pins
from schemas.layout import EXPERIMENT, PINNED, model_root
from worker.answer import answer_batch
from worker.index_store import IndexStore, NotServed, mapped_bytes
from worker.parse import RawEvent, parse_batch
from worker.routing import Router

EXACT = BuildOptions(n_trees=10, seed=1, quality=False)  # exact on these sizes (conftest)


@pytest.fixture
def two_models(tmp_path, small_factors):
    """`default` (300 items, K=8) and `eu` (120 items, K=4): (storage, factors by model,
    first version by model)."""
    eu = synth_factors(n_items=120, n_users=30, dim=4, n_clusters=4, seed=11)
    first = {
        "default": publish_version(small_factors, tmp_path, EXACT).version,
        "eu": publish_version(eu, model_root(tmp_path, "eu"), EXACT).version,
    }
    return tmp_path, {"default": small_factors, "eu": eu}, first


def _store(root, **kw):
    store = IndexStore(ModelCatalog(str(root), {}), poll_interval_s=3600, **kw)
    store.start()
    store.current()
    return store


def _recommend(rid, user, **kw):
    return RecommendRequest(request_id=rid, user_id=user, k=5, **kw)


def _truth(factors, user, k=5):
    rows = exact_inner_product_top_k(factors.item_factors, factors.user_factors[user], k)
    return [f"i{r}" for r in rows]


def _batch(requests):
    return parse_batch(
        [
            RawEvent("requests", 0, i, None, r.model_dump_json().encode())
            for i, r in enumerate(requests)
        ]
    )


def test_two_models_answer_from_their_own_catalogues(two_models):
    root, factors, first = two_models
    store = _store(root)
    try:
        router = Router(store.serving(), store.pinned)
        out = answer_batch(
            _batch([_recommend("d", "u3"), _recommend("e", "u3", model="eu")]), router, "w"
        )
        by_id = {r.request_id: r for r in out.replies}
        for rid, model in (("d", "default"), ("e", "eu")):
            reply = by_id[rid]
            assert reply.model == model and reply.index_version == first[model]
            assert [i.item_id for i in reply.items] == _truth(factors[model], 3)
        assert {(s.model, s.variant) for s in out.served} == {("default", ""), ("eu", "")}
    finally:
        store.stop()


def test_a_pinned_version_answers_exactly_while_latest_moves_on(two_models):
    root, factors, first = two_models
    store = _store(root)
    try:
        moved = synth_factors(n_items=300, n_users=40, dim=8, n_clusters=6, seed=77)
        second = publish_version(moved, root, EXACT).version
        store.check_latest()
        store.current()
        router = Router(store.serving(), store.pinned)
        pinned = _recommend("p", "u5", version=first["default"])
        out = answer_batch(_batch([pinned, _recommend("l", "u5")]), router, "w")
        by_id = {r.request_id: r for r in out.replies}
        assert by_id["p"].index_version == first["default"] and by_id["p"].pinned
        assert [i.item_id for i in by_id["p"].items] == _truth(factors["default"], 5)
        assert by_id["l"].index_version == second and not by_id["l"].pinned
        assert [i.item_id for i in by_id["l"].items] == _truth(moved, 5)
    finally:
        store.stop()


def test_unknown_models_and_versions_get_an_error_reply_and_a_dead_letter(two_models):
    root, _, first = two_models
    store = _store(root)
    try:
        router = Router(store.serving(), store.pinned)
        missing = "20200101T000000.000000Z-abcdef"
        requests = [
            _recommend("m", "u1", model="nope"),
            _recommend("v", "u1", version=missing),
            SimilarItemsRequest(request_id="x", item_id="i1", model="eu", version=first["default"]),
        ]
        out = answer_batch(_batch(requests), router, "w")
        errors = {r.request_id: r.error for r in out.replies if r.status == "error"}
        assert "unknown model 'nope' (this worker serves: default, eu)" in errors["m"]
        assert f"model default has no version {missing}" in errors["v"]
        assert f"model eu has no version {first['default']}" in errors["x"]
        assert sorted(d.request_id for d in out.dead_letters) == ["m", "v", "x"]
        assert all(d.reason == errors[d.request_id] for d in out.dead_letters)
    finally:
        store.stop()


def test_an_experiment_applies_once_its_candidate_is_held_and_replies_name_the_arm(two_models):
    root, _, first = two_models
    candidate = publish_version(
        synth_factors(n_items=300, n_users=40, dim=8, n_clusters=6, seed=5), root / "cand", EXACT
    ).version
    (root / "cand" / "versions" / candidate).rename(root / "versions" / candidate)
    storage.set_latest(root, first["default"], allow_older=True)  # the candidate is not LATEST
    experiment = Experiment(
        name="t",
        model="default",
        arms=[Arm(name="control", share=0.7), Arm(name="new", version=candidate, share=0.3)],
    )
    storage.write_state(root, EXPERIMENT, experiment.model_dump_json())
    store = _store(root)
    try:
        served = store.serving().models["default"]
        assert served.experiment == experiment and set(served.held) == {first["default"], candidate}
        router = Router(store.serving(), store.pinned)
        users = [f"u{u}" for u in range(40)]
        out = answer_batch(_batch([_recommend(u, u) for u in users]), router, "w")
        for reply in out.replies:
            arm = experiment.arm_for(reply.request_id)
            assert reply.variant == arm.name
            assert reply.index_version == (arm.version or first["default"])
        assert set(Counter(r.variant for r in out.replies)) == {"control", "new"}
        # Anonymous traffic (no user_id, no subject) is the control's, counted in no arm; a
        # subject is assigned like a user.
        anonymous = RecommendRequest(request_id="a", recent_items=["i1"], k=3)
        assert router.route(anonymous).variant is None
        keyed = anonymous.model_copy(update={"subject": "u7"})
        assert router.route(keyed).variant == experiment.arm_for("u7").name
        # The experiment ends: the next snapshot serves LATEST alone, the candidate unloaded.
        storage.write_state(root, EXPERIMENT, None)
        store.check_latest()
        store.current()
        served = store.serving().models["default"]
        assert served.experiment is None and set(served.held) == {first["default"]}
    finally:
        store.stop()


def test_what_is_beyond_the_memory_budget_gets_an_error_reply_naming_it(two_models):
    root, _, first = two_models
    store = _store(root)
    sizes = {m.model: mapped_bytes(m.latest.manifest) for m in store.serving().models.values()}
    store.stop()
    budget = sizes["default"] + sizes["eu"] // 2  # room for default's LATEST only
    store = _store(root, memory_budget_bytes=budget)
    try:
        serving = store.serving()
        assert set(serving.models) == {"default"} and "memory budget" in serving.unavailable["eu"]
        router = Router(serving, store.pinned)
        with pytest.raises(NotServed, match=r"model eu is not served by this worker: .*budget"):
            router.route(_recommend("e", "u1", model="eu"))
        # a pin of another default version is beyond the budget too
        older = first["default"]
        publish_version(synth_factors(300, 40, 8, seed=8), root, EXACT)
        storage.set_latest(root, older, allow_older=False)
        store.check_latest()
        store.current()
        latest = store.serving().models["default"].latest.version
        assert latest != older
        router = Router(store.serving(), store.pinned)
        out = answer_batch(_batch([_recommend("p", "u1", version=older)]), router, "w")
        [reply] = out.replies
        assert reply.status == "error" and "ANNREC_MEMORY_BUDGET_MB" in reply.error
    finally:
        store.stop()


def test_registered_pins_are_held_before_any_request_names_them(two_models):
    root, _, first = two_models
    publish_version(synth_factors(300, 40, 8, seed=8), root, EXACT)
    storage.write_state(root, PINNED, Pins(versions=[first["default"]]).model_dump_json())
    store = _store(root)
    try:
        assert first["default"] in store.serving().models["default"].held
        route = Router(store.serving()).route(_recommend("p", "u1", version=first["default"]))
        assert route.pinned and route.version.version == first["default"]
    finally:
        store.stop()


def test_replies_from_the_cache_are_counted_under_their_model_and_arm():
    from worker.answer import cached_outcome
    from worker.metrics import WorkerMetrics

    [parsed] = _batch([_recommend("c", "u1", model="eu")])
    reply = Reply(
        request_id="c", status="ok", kind="recommend", model="eu", variant="new", worker_id="w"
    )
    outcome = cached_outcome([(parsed, reply)])
    [served] = outcome.served
    assert (served.model, served.variant, served.kind) == ("eu", "new", "recommend")
    metrics = WorkerMetrics()
    metrics.record_batch(1, outcome, 0.0)
    counted = metrics.model_requests.labels("eu", "new", "recommend", "ok")._value.get()
    assert counted == 1


def test_a_cached_reply_past_its_deadline_is_expired_like_a_computed_one():
    from worker.answer import Policy, cached_outcome

    sent_ms = 1_000_000_000_000
    late, timely, default = parse_batch(
        [
            RawEvent("requests", 0, i, None, r.model_dump_json().encode(), sent_ms)
            for i, r in enumerate(
                [
                    _recommend("late", "u1", deadline_ms=50),
                    _recommend("timely", "u1", deadline_ms=5_000),
                    _recommend("default", "u1"),
                ]
            )
        ]
    )
    items = [ScoredItem(item_id="i1", score=0.5)]
    cached = [
        (
            p,
            Reply(
                request_id=p.request.request_id,
                status="ok",
                kind="recommend",
                items=items,
                worker_id="w",
            ),
        )
        for p in (late, timely, default)
    ]
    now = sent_ms / 1000 + 1.0  # a second after the requests were produced
    replies = cached_outcome(cached, Policy(), now).replies
    assert [r.status for r in replies] == ["expired", "ok", "ok"]
    assert replies[0].items == [] and "deadline passed 950 ms ago" in replies[0].error
    assert replies[1].items == items
    # The worker's default deadline applies to requests without their own.
    replies = cached_outcome(cached, Policy(default_deadline_ms=100), now).replies
    assert [r.status for r in replies] == ["expired", "ok", "expired"]
    assert [s.outcome for s in cached_outcome(cached, Policy(), now).served] == [
        "expired",
        "ok",
        "ok",
    ]
