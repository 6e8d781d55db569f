"""Real-time personalization on real Kafka and Redis: interactions consumed beside requests, each
user's bounded history in Redis (replays change nothing), recommend by user_id moving toward
what the user just did, unknown users with events personalised, malformed events dead-lettered."""

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import redis

from adapters.interactions import publish_interactions
from index_builder.publish import BuildOptions, publish_version
from query_engine.vectors import unit_rows
from schemas import keys
from schemas.events import DeadLetter, Interaction, RecommendRequest
from tests.integration.helpers import (
    committed_offsets,
    consume_all,
    end_offsets,
    produce,
    running_worker,
)
from tools.client import ReplyWaiter, send_requests
from worker.consumer import interactions_group

NOW = datetime.now(UTC)


def _until(check, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _events(user, items, start_s_ago=100, step_s=10):
    return [
        Interaction(
            user_id=user,
            item_id=item,
            type="view",
            timestamp=NOW - timedelta(seconds=start_s_ago - i * step_s),
        )
        for i, item in enumerate(items)
    ]


def test_history_is_bounded_replays_change_nothing_and_bad_events_are_dead_lettered(
    settings, kafka_conf, services, small_factors
):
    settings = settings.model_copy(update={"history_length": 5, "history_max_age_s": 3600})
    publish_version(small_factors, Path(settings.storage), BuildOptions(n_trees=5, quality=False))
    client = redis.Redis.from_url(services.redis_url)
    events = _events("ua", [f"i{n}" for n in range(8)])
    stale = Interaction(user_id="ua", item_id="i99", timestamp=NOW - timedelta(hours=2))
    with running_worker(settings, kafka_conf, services.redis_url) as worker:
        publish_interactions(kafka_conf, settings.topic_interactions, [stale, *events])
        produce(
            kafka_conf,
            settings.topic_interactions,
            [b'{"user_id": "ua", "item_id": "i1"}', b"not json"],
        )
        _until(lambda: worker.interactions_read == 9 and worker.dead_lettered == 2)
        key = keys.history_key("ua")
        kept = client.zrange(key, 0, -1, withscores=True)
        read = worker_history(client, settings, "ua")
        assert read == [f"i{n}" for n in range(3, 8)], "the newest 5, the 2-hour-old one gone"
        assert 0 < client.ttl(key) <= 3600

        publish_interactions(kafka_conf, settings.topic_interactions, [stale, *events])  # replay
        _until(lambda: worker.interactions_read == 18)
        assert client.zrange(key, 0, -1, withscores=True) == kept, "a replay changes nothing"
        assert len(kept) == 5

    letters = [
        DeadLetter.model_validate_json(m.value())
        for m in consume_all(kafka_conf, settings.topic_dead_letters, 2)
    ]
    assert len({(d.source_partition, d.source_offset) for d in letters}) == 2
    assert {d.source_topic for d in letters} == {settings.topic_interactions}
    reasons = " | ".join(d.reason for d in letters)
    assert "invalid interaction" in reasons and "timestamp" in reasons, reasons
    group = interactions_group(settings.group_id)  # the interactions consumer's own group
    done = committed_offsets(kafka_conf, group, settings.topic_interactions, 4)
    ends = end_offsets(kafka_conf, settings.topic_interactions, 4)
    assert {p: o for p, o in done.items() if o >= 0} == {p: e for p, e in ends.items() if e}


def worker_history(client, settings, user):
    from worker.history import RedisHistory

    history = RedisHistory(client, settings.history_length, settings.history_max_age_s)
    return [e.item_id for e in history.read([user]).get(user, [])]


def test_recommendations_move_toward_what_the_user_just_did(
    settings, kafka_conf, services, small_factors
):
    publish_version(small_factors, Path(settings.storage), BuildOptions(n_trees=5, quality=False))
    items = small_factors.item_factors
    user = small_factors.user_factors[3]
    # The item u3 likes least, and its 3 nearest neighbours: a taste u3 has not shown.
    target = int(np.argmin(items @ user))
    unit = unit_rows(items)
    near = np.argsort(-(unit @ unit[target]))[:4]
    centre = unit[near].mean(axis=0)
    clicked = [f"i{r}" for r in near.tolist()]

    def closeness(reply):
        rows = [int(i.item_id[1:]) for i in reply.items]
        return float((unit[rows] @ centre).mean())

    waiter = ReplyWaiter(kafka_conf, settings.topic_replies)
    with running_worker(settings, kafka_conf, services.redis_url) as worker:
        before = [RecommendRequest(request_id="b-u3", user_id="u3", k=10)]
        before.append(RecommendRequest(request_id="b-new", user_id="newcomer", k=10))
        send_requests(kafka_conf, settings.topic_requests, before)
        first = waiter.wait({"b-u3", "b-new"}, timeout_s=60)
        events = _events("u3", clicked) + _events("newcomer", clicked)
        publish_interactions(kafka_conf, settings.topic_interactions, events)
        _until(lambda: worker.interactions_read == 8)
        after = [
            RecommendRequest(request_id="a-u3", user_id="u3", k=10),
            RecommendRequest(request_id="a-new", user_id="newcomer", k=10),
            RecommendRequest(request_id="a-seen", user_id="u3", k=10, exclude_seen=True),
        ]
        send_requests(kafka_conf, settings.topic_requests, after)
        then = waiter.wait({r.request_id for r in after}, timeout_s=60)
    waiter.close()

    assert first["b-u3"].history_events is None and first["b-new"].fallback == "cold_start"
    moved = then["a-u3"]
    assert moved.history_events == 4 and moved.status == "ok"
    assert closeness(moved) > closeness(first["b-u3"]) + 0.2, "toward what u3 just did"
    newcomer = then["a-new"]
    assert newcomer.fallback is None and newcomer.history_events == 4
    assert all(i.score is not None for i in newcomer.items)
    assert closeness(newcomer) > 0.5, "a newcomer's items come from their events"
    assert not set(clicked) & {i.item_id for i in then["a-seen"].items}
    assert set(clicked) & {i.item_id for i in newcomer.items}, "without exclude_seen they may"
