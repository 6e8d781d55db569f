"""Where results go: Redis (one pipeline per batch) and Kafka (replies, dead letters).

Each sink's write() returns only when its data is durable (Redis acknowledged, Kafka delivered);
any failure raises SinkError, and the serving loop then does not commit the batch's offsets.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
from confluent_kafka import KafkaError, Message, Producer

from schemas import keys
from schemas.errors import AnnrecError
from schemas.events import DeadLetter, Reply


class SinkError(AnnrecError):
    """A batch's results could not be written; its offsets must not be committed."""


class RedisSink:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def write(self, replies: Sequence[Reply]) -> None:
        if not replies:
            return
        pipe = self._client.pipeline(transaction=False)
        for reply in replies:
            doc = reply.model_dump_json()
            pipe.set(keys.reply_key(reply.request_id), doc, ex=keys.REPLY_TTL_S)
            if reply.status == "ok" and reply.kind and reply.subject_id:
                pipe.set(keys.result_key(reply.kind, reply.subject_id), doc, ex=keys.RESULT_TTL_S)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise SinkError(f"redis write failed: {exc}") from exc


class KafkaSink:
    def __init__(
        self,
        producer: Producer,
        replies_topic: str,
        dead_letter_topic: str,
        flush_timeout_s: float = 30.0,
    ) -> None:
        self._producer = producer
        self._replies_topic = replies_topic
        self._dead_letter_topic = dead_letter_topic
        self._flush_timeout_s = flush_timeout_s

    def write(self, replies: Sequence[Reply], dead_letters: Sequence[DeadLetter]) -> None:
        errors: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(err)

        for reply in replies:
            self._produce(
                self._replies_topic, reply.request_id, reply.model_dump_json(), on_delivery
            )
        for dead in dead_letters:
            self._produce(
                self._dead_letter_topic,
                dead.request_id,
                dead.model_dump_json(),
                on_delivery,
                headers={"annrec.reason": dead.reason[:1000]},
            )
        remaining = self._producer.flush(self._flush_timeout_s)
        if remaining:
            raise SinkError(f"{remaining} messages not delivered within {self._flush_timeout_s}s")
        if errors:
            raise SinkError(f"kafka delivery failed: {errors[0]}")

    def _produce(
        self,
        topic: str,
        key: str | None,
        value: str,
        on_delivery: object,
        headers: dict[str, str] | None = None,
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    topic, key=key, value=value.encode(), headers=headers, on_delivery=on_delivery
                )
                return
            except BufferError:  # local queue full: let deliveries drain, then retry
                self._producer.poll(0.1)
