"""Several workers in one group, hot swaps under load, batching, metrics, health, reply cache."""

import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np

from index_builder.announce import announce_version
from index_builder.publish import BuildOptions, publish_version
from index_builder.synth import synth_factors
from query_engine.vectors import exact_inner_product_top_k
from schemas.events import RecommendRequest, Reply
from tests.integration.helpers import consume_all, running_worker
from tools.client import ReplyWaiter, send_requests


def _requests(prefix: str, n: int, n_users: int = 40) -> list[RecommendRequest]:
    # search_k past every leaf of these 300-item indexes: answers are exact, so they can be
    # compared with brute force
    return [
        RecommendRequest(request_id=f"{prefix}-{i}", user_id=f"u{i % n_users}", k=5, search_k=5000)
        for i in range(n)
    ]


def test_two_workers_split_the_partitions_and_a_leaving_worker_loses_nothing(
    settings, kafka_conf, services, small_factors
):
    publish_version(small_factors, Path(settings.storage), BuildOptions(n_trees=5, quality=False))
    second = settings.model_copy(update={"worker_id": settings.worker_id + "-b"})
    waiter = ReplyWaiter(kafka_conf, settings.topic_replies)
    with running_worker(settings, kafka_conf, services.redis_url) as a:
        with running_worker(second, kafka_conf, services.redis_url) as b:
            _wait_until(
                lambda: len(a.assigned) + len(b.assigned) == 4 and a.assigned and b.assigned
            )
            assert not a.assigned & b.assigned
            first = _requests("first", 200)
            send_requests(kafka_conf, settings.topic_requests, first)
            got = waiter.wait({r.request_id for r in first}, timeout_s=60)
            assert len(got) == 200
            assert {r.worker_id for r in got.values()} == {settings.worker_id, second.worker_id}
        # b left (finished its batch, committed, closed): a takes all partitions over
        _wait_until(lambda: len(a.assigned) == 4)
        later = _requests("later", 200)
        send_requests(kafka_conf, settings.topic_requests, later)
        got_later = waiter.wait({r.request_id for r in later}, timeout_s=60)
    waiter.close()
    assert len(got_later) == 200 and {r.worker_id for r in got_later.values()} == {
        settings.worker_id
    }
    # commit on revoke/shutdown: the hand-over re-served nothing
    replies = consume_all(kafka_conf, settings.topic_replies, 400, timeout_s=20)
    counts = Counter(Reply.model_validate_json(m.value()).request_id for m in replies)
    assert len(counts) == 400 and max(counts.values()) == 1


def test_versions_swap_under_load_and_no_reply_mixes_versions(settings, kafka_conf, services):
    storage = Path(settings.storage)
    factor_sets = {}

    def publish(seed: int) -> str:
        factors = synth_factors(300, 40, 8, n_clusters=6, seed=seed)
        m = publish_version(
            factors,
            storage,
            BuildOptions(n_trees=5, quality=False),
            announce=lambda m: announce_version(kafka_conf, settings.topic_index_versions, m),
        )
        factor_sets[m.version] = factors
        return m.version

    publish(100)
    slow = settings.model_copy(update={"index_poll_interval_s": 30.0})  # announcements only
    waiter = ReplyWaiter(kafka_conf, settings.topic_replies)
    sent: list[RecommendRequest] = []
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            batch = _requests(f"load{i}", 20)
            send_requests(kafka_conf, settings.topic_requests, batch)
            sent.extend(batch)
            i += 1
            time.sleep(0.05)

    with running_worker(slow, kafka_conf, services.redis_url) as worker:
        sender = threading.Thread(target=load)
        sender.start()
        for seed in (101, 102, 103):
            time.sleep(1.0)
            publish(seed)
        time.sleep(3.0)
        stop.set()
        sender.join()
        got = waiter.wait({r.request_id for r in sent}, timeout_s=60)
    waiter.close()

    assert len(got) == len(sent) and all(r.status == "ok" for r in got.values())
    versions = Counter(r.index_version for r in got.values())
    assert set(versions) <= set(factor_sets)
    newest = max(factor_sets)
    assert versions[newest] > 0, "the last announced version must be served"
    assert worker.metrics.swaps._value.get() >= 1
    # every reply equals brute force *for the version it names*: nothing mixed within a reply
    for req in sent:
        reply = got[req.request_id]
        f = factor_sets[reply.index_version]
        truth = exact_inner_product_top_k(f.item_factors, f.user_factors[int(req.user_id[1:])], 5)
        assert [i.item_id for i in reply.items] == [f"i{t}" for t in truth]


def test_a_backlog_is_consumed_in_real_batches(settings, kafka_conf, services, small_factors):
    """confluent-kafka-python #2205: consume() returned tiny batches in one release."""
    publish_version(small_factors, Path(settings.storage), BuildOptions(n_trees=5, quality=False))
    backlog = _requests("backlog", 3000)
    send_requests(kafka_conf, settings.topic_requests, backlog)
    waiter = ReplyWaiter(kafka_conf, settings.topic_replies)
    with running_worker(settings, kafka_conf, services.redis_url) as worker:
        got = waiter.wait({r.request_id for r in backlog}, timeout_s=120)
    waiter.close()
    assert len(got) == 3000
    sizes = worker.batch_sizes
    assert sum(sizes) == 3000
    assert np.median(sizes) >= 50, f"batch sizes {sizes}"


def test_metrics_health_and_the_reply_cache(settings, kafka_conf, services, small_factors):
    publish_version(small_factors, Path(settings.storage), BuildOptions(n_trees=5, quality=False))
    cached = settings.model_copy(update={"serve_from_cache": True})
    waiter = ReplyWaiter(kafka_conf, settings.topic_replies)
    with running_worker(cached, kafka_conf, services.redis_url) as worker:
        _wait_until(lambda: worker.http_port is not None and worker.health.version is not None)
        one = RecommendRequest(request_id="first-ask", user_id="u7", k=6)
        send_requests(kafka_conf, settings.topic_requests, [one])
        first = waiter.wait({"first-ask"}, timeout_s=30)["first-ask"]
        again = one.model_copy(update={"request_id": "second-ask"})
        bad = RecommendRequest(request_id="bad-dim", user_vector=[1.0], k=3)
        send_requests(kafka_conf, settings.topic_requests, [again, bad])
        got = waiter.wait({"second-ask", "bad-dim"}, timeout_s=30)
        base = f"http://127.0.0.1:{worker.http_port}"

        def scrape() -> str:
            return urllib.request.urlopen(f"{base}/metrics").read().decode()

        # replies are out before the batch is counted: wait for the count
        _wait_until(lambda: "annrec_dead_letters_total 1.0" in scrape())
        metrics = scrape()
        health = urllib.request.urlopen(f"{base}/health")
        assert health.status == 200
    waiter.close()
    assert not first.from_cache and got["second-ask"].from_cache
    assert got["second-ask"].items == first.items
    assert got["bad-dim"].status == "error"
    assert 'annrec_requests_total{kind="recommend",outcome="ok"} 2.0' in metrics
    assert 'annrec_requests_total{kind="recommend",outcome="dead_letter"} 1.0' in metrics
    assert "annrec_dead_letters_total 1.0" in metrics
    assert "annrec_cache_hits_total 1.0" in metrics
    assert 'annrec_request_latency_seconds_count{stage="compute"} 3.0' in metrics
    assert f'annrec_index_version_info{{version="{worker.health.version}"}} 1.0' in metrics


def _wait_until(condition, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")
