"""The reply topic read from 'now' on: a consumer assigned to every partition at its end offset
before anything is asked, so no reply to a request produced afterwards can be missed. No consumer
group (assign(), nothing committed): every reader sees every reply, and filters by request_id.

Used by `annrec request` and the benchmarks (tools/client.py) and by the gateway's bridge.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from adapters.kafka_log import client_config
from schemas.errors import AnnrecError

_NOT_READY = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}


def high_watermark(consumer: Consumer, tp: TopicPartition, timeout_s: float = 15) -> int:
    """The partition's end offset; a just-created topic's leader may need a moment to take over,
    and until then the broker answers NOT_LEADER_FOR_PARTITION."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return int(consumer.get_watermark_offsets(tp, timeout=5)[1])
        except KafkaException as exc:
            if exc.args[0].code() not in _NOT_READY or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def replies_from_now(
    kafka_conf: dict[str, str],
    replies_topic: str,
    *,
    read_committed: bool = False,
    extra: dict[str, str | int | bool] | None = None,
) -> Consumer:
    """A consumer of every partition of the reply topic, positioned at its current end.

    read_committed: only replies of committed transactions (workers running
    ANNREC_PROCESSING_GUARANTEE=exactly-once: each request's reply is seen once)."""
    consumer = Consumer(
        {
            **client_config(kafka_conf),
            "group.id": f"annrec-client-{uuid.uuid4().hex}",  # required by librdkafka, unused
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
            **(extra or {}),
        }
    )
    try:
        meta = consumer.list_topics(replies_topic, timeout=10).topics[replies_topic]
        if meta.error is not None:
            raise AnnrecError(f"reply topic {replies_topic}: {meta.error}")
        ends = []
        for p in meta.partitions:
            high = high_watermark(consumer, TopicPartition(replies_topic, p))
            ends.append(TopicPartition(replies_topic, p, high if high >= 0 else OFFSET_END))
        consumer.assign(ends)
    except BaseException:
        consumer.close()
        raise
    return consumer
