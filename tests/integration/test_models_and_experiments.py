"""Several models and A/B experiments on one fleet, on real Kafka and Redis (issue 15): two
models answer from their own catalogues; a pinned version answers exactly while LATEST moves on
and gc keeps it; an experiment's assignment is sticky across workers and restarts; unknown
models and versions get an error reply and a dead letter with the reason; starting, promoting
and stopping an experiment under load loses no request and every reply names its version."""

import threading
import time
from pathlib import Path
from urllib.request import urlopen

import redis
from confluent_kafka import Producer

from index_builder import experiments
from index_builder.publish import BuildOptions, publish_version
from index_builder.synth import synth_factors
from index_builder.targets import publish_target
from query_engine.vectors import exact_inner_product_top_k
from schemas import keys
from schemas.events import DeadLetter, RecommendRequest, Reply
from schemas.layout import model_root
from tests.integration.helpers import consume_all, running_worker
from tools.client import ReplyWaiter, send_requests

EXACT = BuildOptions(n_trees=10, seed=1, quality=False)  # exact on 300 items (conftest)


def _truth(factors, user: int, k: int = 5) -> list[str]:
    rows = exact_inner_product_top_k(factors.item_factors, factors.user_factors[user], k)
    return [f"i{r}" for r in rows]


def _ask(kafka_conf, settings, requests, timeout_s=90) -> dict[str, Reply]:
    waiter = ReplyWaiter(kafka_conf, settings.topic_replies)
    try:
        send_requests(kafka_conf, settings.topic_requests, requests)
        return waiter.wait({r.request_id for r in requests}, timeout_s=timeout_s)
    finally:
        waiter.close()


def test_two_models_a_pin_while_latest_moves_and_refusals(
    settings, kafka_conf, services, small_factors
):
    root = Path(settings.storage)
    eu = synth_factors(n_items=120, n_users=30, dim=4, n_clusters=4, seed=11)
    v1 = publish_version(small_factors, root, EXACT).version
    publish_version(eu, model_root(root, "eu"), EXACT)
    with running_worker(settings, kafka_conf, services.redis_url) as worker:
        first = _ask(
            kafka_conf,
            settings,
            [
                RecommendRequest(request_id="d-u3", user_id="u3", k=5),
                RecommendRequest(request_id="e-u3", user_id="u3", k=5, model="eu"),
            ],
        )
        assert [i.item_id for i in first["d-u3"].items] == _truth(small_factors, 3)
        assert [i.item_id for i in first["e-u3"].items] == _truth(eu, 3)
        assert first["e-u3"].model == "eu" and first["d-u3"].model == "default"

        # LATEST moves on; v1 is pinned, and gc then removes every old version but it.
        moved = synth_factors(n_items=300, n_users=40, dim=8, n_clusters=6, seed=77)
        v2 = publish_version(moved, root, EXACT).version
        v3 = publish_version(moved, root, EXACT).version
        target = publish_target(str(root), {}, root / "build")
        experiments.pin(target, target.storage, "default", v1)
        assert target.gc(keep=1, grace_s=0) == [v2]
        deadline = time.monotonic() + 60
        while worker.health.version != v3 and time.monotonic() < deadline:
            time.sleep(0.1)
        missing = "20200101T000000.000000Z-abcdef"
        replies = _ask(
            kafka_conf,
            settings,
            [
                RecommendRequest(request_id="pin", user_id="u5", k=5, version=v1),
                RecommendRequest(request_id="latest", user_id="u5", k=5),
                RecommendRequest(request_id="no-model", user_id="u5", model="nope"),
                RecommendRequest(request_id="no-version", user_id="u5", version=missing),
            ],
        )
        dead = consume_all(kafka_conf, settings.topic_dead_letters, 2)

    assert replies["pin"].index_version == v1 and replies["pin"].pinned
    assert [i.item_id for i in replies["pin"].items] == _truth(small_factors, 5)
    assert replies["latest"].index_version == v3
    assert [i.item_id for i in replies["latest"].items] == _truth(moved, 5)
    # the subject's latest result is LATEST's answer, not the pinned one's
    stored = redis.Redis.from_url(services.redis_url).get(keys.result_key("recommend", "u5"))
    assert Reply.model_validate_json(stored).index_version == v3
    assert replies["no-model"].status == "error"
    assert "unknown model 'nope' (this worker serves: default, eu)" in replies["no-model"].error
    assert replies["no-version"].status == "error"
    assert f"model default has no version {missing}" in replies["no-version"].error
    letters = {d.request_id: d for d in (DeadLetter.model_validate_json(m.value()) for m in dead)}
    assert letters["no-model"].reason == replies["no-model"].error
    assert letters["no-version"].reason == replies["no-version"].error


def _candidate_and_latest(settings, small_factors):
    """(a candidate version, LATEST published after it, the storage's publish target)."""
    root = Path(settings.storage)
    candidate = publish_version(
        synth_factors(n_items=300, n_users=40, dim=8, n_clusters=6, seed=5), root, EXACT
    ).version
    latest = publish_version(small_factors, root, EXACT).version
    return candidate, latest, publish_target(str(root), {}, root / "build")


def test_assignment_is_sticky_across_workers_and_restarts(
    settings, kafka_conf, services, small_factors
):
    candidate, latest, target = _candidate_and_latest(settings, small_factors)
    experiment = experiments.start(target, target.storage, "default", "t", [f"{candidate}:30"])
    users = [f"u{u}" for u in range(40)]

    def ask(round_: str) -> dict[str, Reply]:
        requests = [RecommendRequest(request_id=f"{round_}-{u}", user_id=u, k=3) for u in users]
        got = _ask(kafka_conf, settings, requests)
        assert len(got) == len(users)
        return {r.request_id.split("-", 1)[1]: r for r in got.values()}

    other = settings.model_copy(update={"worker_id": settings.worker_id + "-b"})
    with (
        running_worker(settings, kafka_conf, services.redis_url) as a,
        running_worker(other, kafka_conf, services.redis_url) as b,
    ):
        deadline = time.monotonic() + 60  # both in the group: the batch is split between them
        while not (a.assigned and b.assigned) and time.monotonic() < deadline:
            time.sleep(0.1)
        two = ask("two")
    with running_worker(other, kafka_conf, services.redis_url) as w:  # a restart, alone
        again = ask("again")
        status = w._status({})
        metrics = urlopen(f"http://127.0.0.1:{w.http_port}/metrics").read().decode()

    # the arms, measured apart: annrec status and /metrics
    in_candidate = sum(experiment.arm_for(u).name == "candidate" for u in users)
    doc = status["models"]["default"]
    assert doc["experiment"] == "t" and doc["arms"]["candidate"]["version"] == candidate
    assert doc["arms"]["candidate"]["requests"] == in_candidate
    assert doc["arms"]["control"]["requests"] == len(users) - in_candidate
    assert (
        'annrec_model_requests_total{kind="recommend",model="default",outcome="ok",'
        f'variant="candidate"}} {float(in_candidate)}'
    ) in metrics
    assert (
        f'annrec_model_version_info{{model="default",role="candidate",variant="candidate",'
        f'version="{candidate}"}} 1.0'
    ) in metrics

    assert {r.worker_id for r in two.values()} == {settings.worker_id, other.worker_id}
    for u in users:
        arm = experiment.arm_for(u)
        for reply in (two[u], again[u]):
            assert reply.variant == arm.name
            assert reply.index_version == (arm.version or latest)
    assert {r.variant for r in two.values()} == {"control", "candidate"}


def test_experiment_start_promote_stop_under_load_loses_nothing(
    settings, kafka_conf, services, small_factors
):
    candidate, old, target = _candidate_and_latest(settings, small_factors)
    sent: list[RecommendRequest] = []
    stop = threading.Event()

    def load() -> None:  # ~100 requests/s until stopped, one producer
        producer = Producer(kafka_conf)
        n = 0
        while not stop.is_set():
            for _ in range(10):
                request = RecommendRequest(request_id=f"r{n}", user_id=f"u{n % 40}", k=3)
                producer.produce(settings.topic_requests, request.model_dump_json().encode())
                sent.append(request)
                n += 1
            producer.flush(10)
            time.sleep(0.1)
        assert producer.flush(30) == 0

    waiter = ReplyWaiter(kafka_conf, settings.topic_replies)
    with running_worker(settings, kafka_conf, services.redis_url) as worker:
        deadline = time.monotonic() + 60
        while not worker.assigned and time.monotonic() < deadline:
            time.sleep(0.1)
        sender = threading.Thread(target=load)
        sender.start()
        try:
            time.sleep(1.5)
            experiments.start(target, target.storage, "default", "t", [f"{candidate}:50"])
            time.sleep(2.0)
            experiments.promote(target, target.storage, "default", "candidate")
            time.sleep(2.0)
            experiments.start(target, target.storage, "default", "t2", [f"{old}:50"])
            time.sleep(2.0)
            experiments.stop(target, target.storage, "default")
            time.sleep(1.5)
        finally:
            stop.set()
            sender.join()
        replies = waiter.wait({r.request_id for r in sent}, timeout_s=90)
    waiter.close()

    assert len(sent) > 200 and len(replies) == len(sent)  # 0 lost
    seen = {(r.variant, r.index_version) for r in replies.values()}
    # every reply names the version that computed it, consistent with its arm
    assert seen <= {
        (None, old),
        ("control", old),
        ("candidate", candidate),
        ("control", candidate),  # after the promotion, LATEST
        (None, candidate),
        ("candidate", old),  # t2's candidate arm is the old version
    }
    assert all(r.status == "ok" for r in replies.values())
    assert ("candidate", candidate) in seen and (None, candidate) in seen


def test_availability_updates_reach_the_candidate_arm_too(
    settings, kafka_conf, services, small_factors
):
    """An item out of stock is out of stock in every arm of an experiment on the model the
    item-updates topic applies to (`default`), not only in LATEST's."""
    from adapters.item_updates import publish_item_updates
    from schemas.events import ItemUpdate
    from tests.integration.test_filters_live import IN_STOCK, _table

    root = Path(settings.storage)
    candidate_factors = synth_factors(n_items=300, n_users=40, dim=8, n_clusters=6, seed=5)
    candidate = publish_version(
        candidate_factors, root, EXACT, attributes=_table(candidate_factors)
    ).version
    publish_version(small_factors, root, EXACT, attributes=_table(small_factors))
    target = publish_target(str(root), {}, root / "build")
    experiment = experiments.start(target, target.storage, "default", "t", [f"{candidate}:50"])
    user = next(f"u{u}" for u in range(40) if experiment.arm_for(f"u{u}").name == "candidate")

    def ask(rid: str) -> Reply:
        request = RecommendRequest(request_id=rid, user_id=user, k=5, filter=IN_STOCK)
        return _ask(kafka_conf, settings, [request])[rid]

    with running_worker(settings, kafka_conf, services.redis_url) as worker:
        before = ask("before")
        gone = before.items[0].item_id
        publish_item_updates(
            kafka_conf, settings.topic_item_updates, [ItemUpdate(item_id=gone, value=False)]
        )
        deadline = time.monotonic() + 30
        while worker.availability.read < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        after = ask("after")
    assert before.variant == after.variant == "candidate"
    assert before.index_version == after.index_version == candidate
    assert before.filter_passing == 300 and after.filter_passing == 299
    assert gone not in [i.item_id for i in after.items]
