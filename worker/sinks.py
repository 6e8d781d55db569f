"""Where results go: Redis (one pipeline per batch) and Kafka (replies, dead letters).

Each sink's write() returns only when its data is durable (Redis acknowledged, Kafka delivered);
any failure raises SinkError, and the serving loop then does not commit the batch's offsets.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
import structlog
from confluent_kafka import KafkaError, Message, Producer

from schemas import keys
from schemas.errors import AnnrecError
from schemas.events import DeadLetter, Reply, utc_now
from worker.answer import Outcome, Parsed

log = structlog.get_logger(__name__)


class SinkError(AnnrecError):
    """A batch's results could not be written; its offsets must not be committed."""


class RedisSink:
    def __init__(
        self,
        client: redis.Redis,
        reply_ttl_s: int = keys.REPLY_TTL_S,
        result_ttl_s: int = keys.RESULT_TTL_S,
    ) -> None:
        self._client = client
        self._reply_ttl_s = reply_ttl_s
        self._result_ttl_s = result_ttl_s

    def write(self, replies: Sequence[Reply]) -> None:
        if not replies:
            return
        pipe = self._client.pipeline(transaction=False)
        for reply in replies:
            doc = reply.model_dump_json()
            pipe.set(keys.reply_key(reply.request_id), doc, ex=self._reply_ttl_s)
            # The per-subject result is "recommended for you": a filtered answer is not that.
            if reply.status == "ok" and reply.kind and reply.subject_id and not reply.filtered:
                pipe.set(keys.result_key(reply.kind, reply.subject_id), doc, ex=self._result_ttl_s)
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


class ReplyCache:
    """Replies already computed for a version, by what was asked (not by who asked), so a
    repeated request is answered from Redis without touching the index. Best effort: a Redis
    failure here means computing, never failing the batch."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self._client = client
        self._ttl_s = ttl_s

    def lookup(self, parsed: Sequence[Parsed], version: str) -> dict[str, Reply]:
        wanted = [(p.request, keys.cache_key(version, p.request)) for p in parsed if _cacheable(p)]
        if not wanted:
            return {}
        try:
            values = self._client.mget([k for _, k in wanted])
        except redis.RedisError as exc:
            log.warning("cache_lookup_failed", error=str(exc))
            return {}
        hits = {}
        for (request, _), raw in zip(wanted, values, strict=True):
            if raw is not None:
                hits[request.request_id] = Reply.model_validate_json(raw).model_copy(
                    update={
                        "request_id": request.request_id,
                        "served_at": utc_now(),
                        "from_cache": True,
                    }
                )
        return hits

    def store(self, parsed: Sequence[Parsed], outcome: Outcome, version: str) -> None:
        by_id = {r.request_id: r for r in outcome.replies if r.status == "ok" and not r.from_cache}
        pipe = self._client.pipeline(transaction=False)
        for p in parsed:
            if _cacheable(p) and p.request.request_id in by_id:  # type: ignore[union-attr]
                doc = by_id[p.request.request_id].model_dump_json()
                pipe.set(keys.cache_key(version, p.request), doc, ex=self._ttl_s)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("cache_store_failed", error=str(exc))


def _cacheable(p: Parsed) -> bool:
    # A filter's answer changes with availability updates within a version, and the cache is
    # keyed by version only: filtered requests are always computed.
    return p.request is not None and p.request.filter is None
