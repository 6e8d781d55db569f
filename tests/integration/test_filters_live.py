"""Filters on real Kafka and Redis: availability updates, replay on restart, fold at build,
dead letters for filters a version cannot evaluate."""

import time
from pathlib import Path

import redis

from adapters.item_updates import publish_item_updates, read_item_updates
from index_builder.attributes import table_from_columns
from index_builder.publish import BuildOptions, publish_version
from schemas import keys
from schemas.events import DeadLetter, ItemUpdate, RecommendRequest
from tests.integration.helpers import consume_all, running_worker
from tools.client import ReplyWaiter, send_requests
from worker.index_store import load_version

IN_STOCK = {"attr": "in_stock", "eq": True}


def _table(factors):
    ids = factors.item_ids.tolist()
    return table_from_columns(
        {"item_id": ids, "in_stock": ["true"] * len(ids), "color": ["red", "blue"] * 150}, ids
    )


def _publish(settings, factors, **kwargs):
    """A version with `in_stock` (all true) and `color` (odd rows blue); no quality report: on
    300 items the index then visits every node and answers exactly."""
    return publish_version(
        factors,
        Path(settings.storage),
        BuildOptions(n_trees=10, quality=False),
        attributes=_table(factors),
        **kwargs,
    )


def _ask(kafka_conf, settings, waiter, rid: str, **fields):
    request = RecommendRequest(request_id=rid, user_id="u3", k=5, **fields)
    send_requests(kafka_conf, settings.topic_requests, [request])
    return waiter.wait({rid}, timeout_s=60)[rid]


def _wait_until(predicate, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_an_availability_update_is_honoured_by_the_next_batch_and_after_a_restart(
    settings, kafka_conf, services, small_factors
):
    _publish(settings, small_factors)
    waiter = ReplyWaiter(kafka_conf, settings.topic_replies)
    with running_worker(settings, kafka_conf, services.redis_url) as worker:
        before = _ask(kafka_conf, settings, waiter, "before", filter=IN_STOCK)
        assert before.status == "ok" and before.filter_passing == 300
        gone = before.items[0].item_id
        publish_item_updates(
            kafka_conf, settings.topic_item_updates, [ItemUpdate(item_id=gone, value=False)]
        )
        _wait_until(lambda: worker.availability.read == 1)  # read: applied before the next batch
        after = _ask(kafka_conf, settings, waiter, "after", filter=IN_STOCK)
        unfiltered = _ask(kafka_conf, settings, waiter, "plain")
    assert after.filter_passing == 299
    assert gone not in [i.item_id for i in after.items]
    assert [i.item_id for i in after.items] == [i.item_id for i in before.items[1:]] + [
        after.items[-1].item_id
    ]
    assert gone in [i.item_id for i in unfiltered.items]  # availability is a filter, opt-in

    # A restarted worker replays the topic before it serves its first request.
    restarted = settings.model_copy(update={"worker_id": settings.worker_id + "-2"})
    with running_worker(restarted, kafka_conf, services.redis_url):
        again = _ask(kafka_conf, settings, waiter, "restarted", filter=IN_STOCK)
    waiter.close()
    assert again.filter_passing == 299 and gone not in [i.item_id for i in again.items]

    # Filtered replies are not "recommended for you": the per-user result is the plain one.
    stored = redis.Redis.from_url(services.redis_url).get(keys.result_key("recommend", "u3"))
    assert stored is not None and b'"filter_passing":null' in stored


def test_the_builder_folds_published_updates_into_the_next_version(
    settings, kafka_conf, small_factors
):
    publish_item_updates(
        kafka_conf,
        settings.topic_item_updates,
        [
            ItemUpdate(item_id="i4", value=False),
            ItemUpdate(item_id="i9", value=False),
            ItemUpdate(item_id="i9", value=True),  # the newest value wins
            ItemUpdate(item_id="unknown-item", value=False),
        ],
    )
    snapshot = read_item_updates(kafka_conf, settings.topic_item_updates)
    assert snapshot.through == {0: 4}  # one partition, read to its end
    assert snapshot.state == {
        ("in_stock", "i4"): False,
        ("in_stock", "i9"): True,
        ("in_stock", "unknown-item"): False,
    }
    storage = Path(settings.storage)
    manifest = _publish(settings, small_factors, item_updates=snapshot)
    assert manifest.item_updates_applied == 2 and manifest.item_updates_through == {0: 4}
    v = load_version(storage, manifest.version)
    try:
        assert v.attributes is not None
        out = set(v.attributes.bool_mask("in_stock", [False]).nonzero()[0].tolist())
        assert out == {4}
    finally:
        v.close()


def test_a_filter_naming_an_unknown_attribute_is_dead_lettered_and_answered_with_an_error(
    settings, kafka_conf, services, small_factors
):
    _publish(settings, small_factors)
    waiter = ReplyWaiter(kafka_conf, settings.topic_replies)
    with running_worker(settings, kafka_conf, services.redis_url):
        bad = _ask(kafka_conf, settings, waiter, "bad", filter={"attr": "brand", "eq": "acme"})
        good = _ask(kafka_conf, settings, waiter, "good", filter={"attr": "color", "eq": "blue"})
    waiter.close()
    assert bad.status == "error" and "unknown attribute 'brand'" in (bad.error or "")
    [dead] = consume_all(kafka_conf, settings.topic_dead_letters, 1)
    letter = DeadLetter.model_validate_json(dead.value())
    assert letter.request_id == "bad" and "unknown attribute 'brand'" in letter.reason
    assert good.status == "ok" and good.filter_passing == 150
    assert all(int(i.item_id[1:]) % 2 == 1 for i in good.items)
