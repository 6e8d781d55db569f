"""The topic layout (names, partitions, retention) and the one function that creates it.

The layout is part of the contract: request partitions bound how many workers can share the load,
and the index-versions topic is compacted so a new worker finds the latest announcement.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from adapters.kafka_log import client_config
from schemas import keys
from schemas.errors import AnnrecError
from schemas.settings import CommonSettings

_WEEK_MS = str(7 * 24 * 3600 * 1000)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: CommonSettings) -> list[TopicSpec]:
    return [
        TopicSpec(settings.topic_requests, keys.REQUEST_PARTITIONS),
        TopicSpec(settings.topic_replies, keys.REQUEST_PARTITIONS),
        TopicSpec(settings.topic_dead_letters, 1, {"retention.ms": str(2 * int(_WEEK_MS))}),
        TopicSpec(settings.topic_index_versions, 1, {"cleanup.policy": "compact"}),
        TopicSpec(settings.topic_item_updates, 1, {"cleanup.policy": "compact"}),
        TopicSpec(settings.topic_item_vectors, 1, {"cleanup.policy": "compact"}),
        # Keyed by user_id: a user's events in order on one partition, partitions shared out
        # over the group like the requests'. Kept a week (the broker's default) for replays.
        TopicSpec(settings.topic_interactions, keys.REQUEST_PARTITIONS),
    ]


class Outgoing(NamedTuple):
    topic: str
    key: str | None
    value: str
    headers: dict[str, str | bytes | None] | None = None  # as librdkafka takes them


class NotDelivered(AnnrecError):
    """Messages the broker did not acknowledge (timed out, or refused)."""


def produce_all(producer: Producer, messages: Iterable[Outgoing], timeout_s: float) -> None:
    """Produce every message and return once the broker acknowledged each one; NotDelivered
    says how many were not, or the first refusal."""
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    for m in messages:
        key = None if m.key is None else m.key.encode()
        while True:
            try:
                producer.produce(
                    m.topic,
                    key=key,
                    value=m.value.encode(),
                    headers=m.headers,
                    on_delivery=on_delivery,
                )
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                producer.poll(0.1)
    remaining = producer.flush(timeout_s)
    if remaining:
        raise NotDelivered(f"{remaining} messages not delivered within {timeout_s:.0f}s")
    if errors:
        raise NotDelivered(f"delivery failed: {errors[0]}")


def deliver(
    kafka_conf: Mapping[str, str],
    topic: str,
    messages: Sequence[tuple[str, str]],
    what: str,
    timeout_s: float = 30,
) -> None:
    """Produce (key, value) messages with a producer of their own and return once the broker
    acknowledged every one; AnnrecError names `what` was not delivered and why."""
    producer = Producer(client_config({**kafka_conf, "enable.idempotence": True}))
    try:
        produce_all(producer, (Outgoing(topic, k, v) for k, v in messages), timeout_s)
    except NotDelivered as exc:
        raise AnnrecError(f"{what}: {exc}") from exc


def ensure_topics(
    kafka_conf: dict[str, str], specs: list[TopicSpec], timeout_s: float = 30
) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are."""
    admin = AdminClient(client_config(kafka_conf))
    existing = list_topics(admin, kafka_conf, timeout_s)
    missing = [
        NewTopic(s.name, num_partitions=s.partitions, config=s.config)
        for s in specs
        if s.name not in existing
    ]
    if not missing:
        return
    for name, future in admin.create_topics(missing, operation_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # another worker created it first
            raise AnnrecError(f"cannot create topic {name}: {err}") from exc
    _wait_for_leaders(admin, [t.topic for t in missing], timeout_s)


def list_topics(
    admin: AdminClient, kafka_conf: Mapping[str, str], timeout_s: float
) -> dict[str, Any]:
    """The cluster's topics; AnnrecError, one line naming the bootstrap and the setting to
    check, when Kafka does not answer."""
    try:
        return dict(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        reason = exc.args[0].str() if isinstance(exc.args[0], KafkaError) else str(exc)
        raise AnnrecError(
            f"Kafka at {kafka_conf.get('bootstrap.servers')} is not reachable ({reason}): "
            f"check {keys.ENV_KAFKA_BOOTSTRAP} or start one with `annrec stack up`"
        ) from exc


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout_s: float) -> None:
    # CreateTopics returns before every partition has a leader; a client that asks for offsets
    # in that window gets NOT_LEADER_FOR_PARTITION, so wait until the metadata shows leaders.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=timeout_s).topics
        if all(
            n in topics
            and topics[n].error is None
            and topics[n].partitions
            and all(p.leader >= 0 for p in topics[n].partitions.values())
            for n in names
        ):
            return
        time.sleep(0.1)
    raise AnnrecError(f"topics {names} have no leaders after {timeout_s:.0f}s")
