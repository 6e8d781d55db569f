"""request -> Kafka -> worker -> Redis + reply topic, on real services, against brute force."""

import json
from pathlib import Path

import numpy as np
import pytest
import redis

from index_builder.announce import announce_version
from index_builder.publish import BuildOptions, publish_version
from query_engine.vectors import exact_cosine_top_k, exact_inner_product_top_k
from schemas import keys
from schemas.events import DeadLetter, IndexAnnounced, RecommendRequest, Reply, SimilarItemsRequest
from tests.integration.helpers import (
    committed_offsets,
    consume_all,
    end_offsets,
    produce,
    running_worker,
)
from tools.client import ReplyWaiter, send_requests


def test_requests_are_answered_through_kafka_and_redis_with_exact_top_k(
    settings, kafka_conf, services, small_factors
):
    manifest = publish_version(
        small_factors,
        Path(settings.storage),
        BuildOptions(n_trees=10, quality=False),  # exact on 300 items, see conftest
        announce=lambda m: announce_version(kafka_conf, settings.topic_index_versions, m),
    )
    requests = [RecommendRequest(request_id=f"rec-{u}", user_id=f"u{u}", k=10) for u in range(12)]
    requests += [SimilarItemsRequest(request_id=f"sim-{i}", item_id=f"i{i}", k=5) for i in range(8)]

    waiter = ReplyWaiter(kafka_conf, settings.topic_replies)
    with running_worker(settings, kafka_conf, services.redis_url):
        send_requests(kafka_conf, settings.topic_requests, requests)
        replies = waiter.wait({r.request_id for r in requests}, timeout_s=90)
    waiter.close()
    assert len(replies) == len(requests)

    items, users = small_factors.item_factors, small_factors.user_factors
    norms = np.linalg.norm(items, axis=1).astype(np.float32)
    r = redis.Redis.from_url(services.redis_url)
    for req in requests:
        reply = replies[req.request_id]
        assert reply.status == "ok" and reply.index_version == manifest.version
        if isinstance(req, RecommendRequest):
            truth = exact_inner_product_top_k(items, users[int(req.user_id[1:])], req.k)
        else:
            row = int(req.item_id[1:])
            truth = exact_cosine_top_k(items, norms, items[row], req.k, exclude=row)
        assert [i.item_id for i in reply.items] == [f"i{t}" for t in truth]
        # the same result is in Redis, under the request and under the subject
        stored = Reply.model_validate_json(r.get(keys.reply_key(req.request_id)))
        assert stored.items == reply.items
        latest = Reply.model_validate_json(r.get(keys.result_key(req.kind, req.subject_id)))
        assert latest.items == reply.items
        assert 0 < r.ttl(keys.reply_key(req.request_id)) <= keys.REPLY_TTL_S

    # every request's offset was committed, after its results were written
    parts = keys.REQUEST_PARTITIONS
    assert committed_offsets(kafka_conf, settings.group_id, settings.topic_requests, parts) == (
        end_offsets(kafka_conf, settings.topic_requests, parts)
    )
    # and the version was announced on the compacted topic
    [announced] = consume_all(kafka_conf, settings.topic_index_versions, 1)
    assert IndexAnnounced.model_validate_json(announced.value()).version == manifest.version
    assert announced.key() == keys.ANNOUNCE_KEY.encode()


def test_malformed_event_goes_to_the_dead_letter_topic_and_the_next_one_is_answered(
    settings, kafka_conf, services, small_factors
):
    publish_version(small_factors, Path(settings.storage), BuildOptions(n_trees=5))
    bad = [
        b"{this is not json",
        json.dumps(
            {"kind": "similar_items", "request_id": "unknown-item", "item_id": "nothing"}
        ).encode(),
    ]
    good = RecommendRequest(request_id="good-1", user_id="u1", k=3)

    waiter = ReplyWaiter(kafka_conf, settings.topic_replies)
    with running_worker(settings, kafka_conf, services.redis_url) as worker:
        produce(kafka_conf, settings.topic_requests, [*bad, good.model_dump_json().encode()])
        replies = waiter.wait({"good-1", "unknown-item"}, timeout_s=90)
        dead = consume_all(kafka_conf, settings.topic_dead_letters, 2)
    waiter.close()

    assert replies["good-1"].status == "ok" and len(replies["good-1"].items) == 3
    assert replies["unknown-item"].status == "error"
    assert "unknown item_id 'nothing'" in replies["unknown-item"].error
    letters = sorted(
        (DeadLetter.model_validate_json(m.value()) for m in dead), key=lambda d: d.payload()
    )
    assert [d.payload() for d in letters] == sorted(bad)
    assert "invalid request" in letters[1].reason or "invalid request" in letters[0].reason
    assert all(m.headers() and m.headers()[0][0] == "annrec.reason" for m in dead)
    assert worker.dead_lettered == 2


def test_live_recall_is_sampled_off_the_request_path_and_published(
    settings, kafka_conf, services, small_factors
):
    """Every answer sampled (fraction 1): the worker's live recall, in Redis and in /metrics,
    equals the recall of its replies against exact brute force computed here."""
    manifest = publish_version(
        small_factors, Path(settings.storage), BuildOptions(n_trees=10, quality=False)
    )
    # search_k=2 makes item -> items answers approximate, so the figure is not trivially 1
    requests = [
        SimilarItemsRequest(request_id=f"live-{i}", item_id=f"i{i}", k=10, search_k=2)
        for i in range(40)
    ]
    items = small_factors.item_factors
    norms = np.linalg.norm(items, axis=1).astype(np.float32)
    every = {"shadow_fraction": 1.0, "shadow_window": 1000, "shadow_cpu_share": 1.0}
    live = settings.model_copy(update=every)
    waiter = ReplyWaiter(kafka_conf, settings.topic_replies)
    with running_worker(live, kafka_conf, services.redis_url) as worker:
        send_requests(kafka_conf, settings.topic_requests, requests)
        replies = waiter.wait({r.request_id for r in requests}, timeout_s=90)
        assert worker.shadow is not None and worker.shadow.wait_idle()
        metrics = worker.metrics.registry
    waiter.close()
    expected = np.mean(
        [
            len(
                {int(i.item_id[1:]) for i in replies[req.request_id].items}
                & set(
                    exact_cosine_top_k(
                        items, norms, items[int(req.item_id[1:])], 10, exclude=int(req.item_id[1:])
                    ).tolist()
                )
            )
            / 10
            for req in requests
        ]
    )
    stored = redis.Redis.from_url(services.redis_url).hgetall(keys.recall_key(manifest.version))
    assert int(stored[b"similar_items:samples"]) == 40
    assert float(stored[b"similar_items"]) == pytest.approx(expected, abs=1e-4)
    gauge = metrics.get_sample_value(
        "annrec_live_recall", {"kind": "similar_items", "version": manifest.version}
    )
    assert gauge == pytest.approx(expected, abs=1e-9)
    assert metrics.get_sample_value("annrec_shadow_samples_total", {"kind": "similar_items"}) == 40
