"""Items added, changed and removed between builds, on real Kafka and Redis: served within a
batch from every worker's fresh segment, replayed by a restarted worker, folded in by the next
build (the segment then empty, answers unchanged), malformed events dead-lettered."""

import time
from pathlib import Path

import numpy as np

from adapters.item_vectors import publish_item_vectors, read_item_vectors
from index_builder.attributes import table_from_columns
from index_builder.publish import BuildOptions, publish_version
from schemas.events import DeadLetter, ItemVector, RecommendRequest, SimilarItemsRequest
from tests.integration.helpers import consume_all, produce, running_worker
from tools.client import ReplyWaiter, send_requests


def _table(factors):
    ids = factors.item_ids.tolist()
    return table_from_columns(
        {"item_id": ids, "in_stock": ["true"] * len(ids), "color": ["red", "blue"] * 150}, ids
    )


def _publish(settings, factors, **kwargs):
    """No quality report: on 300 items the index visits every node and answers exactly."""
    return publish_version(
        factors,
        Path(settings.storage),
        BuildOptions(n_trees=10, quality=False),
        attributes=_table(factors),
        **kwargs,
    )


def _wait_until(predicate, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


class Asker:
    def __init__(self, kafka_conf, settings):
        self.kafka_conf, self.settings, self.n = kafka_conf, settings, 0
        self.waiter = ReplyWaiter(kafka_conf, settings.topic_replies)

    def ids(self, request_type, **fields):
        self.n += 1
        rid = f"r{self.n}"
        request = request_type(request_id=rid, **fields)
        send_requests(self.kafka_conf, self.settings.topic_requests, [request])
        reply = self.waiter.wait({rid}, timeout_s=60)[rid]
        assert reply.status == "ok", reply.error
        return [i.item_id for i in reply.items]

    def answers(self):
        """Every answer the test compares: recommendations, the catalogue by popularity,
        similar items of a version item, of its twin and of the new item."""
        return {
            "u3": self.ids(RecommendRequest, user_id="u3", k=5),
            "blue": self.ids(
                RecommendRequest, user_id="u3", k=5, filter={"attr": "color", "eq": "blue"}
            ),
            "cold": self.ids(RecommendRequest, user_id="nobody", k=300),
            "i7": self.ids(SimilarItemsRequest, item_id="i7", k=5),
            "twin": self.ids(SimilarItemsRequest, item_id="twin7", k=5),
            "new": self.ids(SimilarItemsRequest, item_id="for-u3", k=5),
        }


def test_upserts_and_removals_are_served_replayed_and_folded_in_by_the_next_build(
    settings, kafka_conf, services, small_factors
):
    _publish(settings, small_factors)
    asker = Asker(kafka_conf, settings)
    user = small_factors.user_factors[3]
    longest = float(np.linalg.norm(small_factors.item_factors, axis=1).max())
    built_for_u3 = user / np.linalg.norm(user) * longest * 2  # u3's best item by far
    twin = small_factors.item_factors[7] * 1.01  # cosine 1 with i7
    with running_worker(settings, kafka_conf, services.redis_url) as worker:
        before = asker.ids(RecommendRequest, user_id="u3", k=5)
        removed = before[1]
        publish_item_vectors(
            kafka_conf,
            settings.topic_item_vectors,
            [
                ItemVector(
                    item_id="for-u3", vector=built_for_u3.tolist(), attributes={"color": "blue"}
                ),
                ItemVector(item_id="twin7", vector=twin.tolist(), attributes={"color": "red"}),
                ItemVector(item_id=removed, removed=True),
            ],
        )
        produce(
            kafka_conf,
            settings.topic_item_vectors,
            [
                b'{"item_id": "short", "vector": [1.0, 2.0]}',
                b'{"item_id": "branded", "vector": [1, 1, 1, 1, 1, 1, 1, 1],'
                b' "attributes": {"brand": "x"}}',
                b'{"item_id": "nan", "vector": [NaN, 1, 1, 1, 1, 1, 1, 1]}',
            ],
        )
        _wait_until(lambda: worker.fresh.read == 5)  # 3 + "short" and "branded" parse
        live = asker.answers()
        letters = consume_all(kafka_conf, settings.topic_dead_letters, 3)
    assert live["u3"][0] == "for-u3" and removed not in live["u3"]
    assert live["blue"][0] == "for-u3"
    assert live["i7"][0] == "twin7" and live["twin"][0] == "i7"
    assert live["new"] and "for-u3" not in live["new"]
    assert removed not in live["cold"]  # nor in the popularity fill (fresh items are not in it)
    assert all(removed not in ids for ids in live.values())
    reasons = sorted(DeadLetter.model_validate_json(m.value()).reason for m in letters)
    assert len(reasons) == 3
    assert "invalid item vector" in reasons[0] and "vector" in reasons[0]  # NaN
    assert "unknown attribute 'brand'" in reasons[1]
    assert "vector has 2 values, the version has K=8" in reasons[2]

    # A restarted worker replays the topic before it serves: the same answers.
    restarted = settings.model_copy(update={"worker_id": settings.worker_id + "-2"})
    with running_worker(restarted, kafka_conf, services.redis_url) as worker:
        assert asker.answers() == live

        # The next build folds the events in; the worker swaps to it and its segment empties.
        snapshot = read_item_vectors(kafka_conf, settings.topic_item_vectors)
        manifest = _publish(settings, small_factors, item_vectors=snapshot)
        assert manifest.item_vectors_through == {0: 6} and manifest.item_vectors_applied == 3
        assert manifest.n_items == 300 + 2 - 1
        _wait_until(
            lambda: worker._serving is not None and worker._serving.version == manifest.version
        )
        assert worker._serving.fresh.size == 0
        folded = asker.answers()
    asker.waiter.close()
    for kind in ("u3", "blue", "i7", "twin", "new"):
        assert folded[kind] == live[kind], kind
    assert removed not in folded["cold"]  # the new version's popularity list: its own
