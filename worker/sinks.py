"""Where results go: Redis (one pipeline per batch) and Kafka (replies, dead letters).

Each sink's write() returns only when its data is durable (Redis acknowledged, Kafka delivered);
any failure raises SinkError, and the serving loop then does not commit the batch's offsets.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
import structlog
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from adapters.topics import NotDelivered, Outgoing, produce_all
from schemas import keys
from schemas.errors import AnnrecError
from schemas.events import DeadLetter, Reply
from worker.cache import CacheEntry

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

    def write(self, replies: Sequence[Reply], cache: Sequence[CacheEntry] = ()) -> None:
        """Replies (and the cache entries computed with them) in one pipeline."""
        if not replies and not cache:
            return
        pipe = self._client.pipeline(transaction=False)
        for entry in cache:
            pipe.set(entry.key, entry.value, ex=entry.ttl_s)
        for reply in replies:
            doc = reply.model_dump_json()
            pipe.set(keys.reply_key(reply.request_id), doc, ex=self._reply_ttl_s)
            # The per-subject result is "recommended for you": a filtered (or max_per) answer
            # is not that, nor is the answer of a version a request pinned. Each model has its
            # own key (the model `default` the key it always had).
            if (
                reply.status == "ok"
                and reply.kind
                and reply.subject_id
                and reply.unconstrained
                and not reply.pinned
            ):
                key = keys.result_key(reply.kind, reply.subject_id, reply.model or "default")
                pipe.set(key, doc, ex=self._result_ttl_s)
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
        messages = self._messages(replies, dead_letters)
        try:
            produce_all(self._producer, messages, self._flush_timeout_s)
        except NotDelivered as exc:
            raise SinkError(f"kafka: {exc}") from exc

    def _messages(
        self, replies: Sequence[Reply], dead_letters: Sequence[DeadLetter]
    ) -> list[Outgoing]:
        return [
            *(Outgoing(self._replies_topic, r.request_id, r.model_dump_json()) for r in replies),
            *(
                Outgoing(
                    self._dead_letter_topic,
                    d.request_id,
                    d.model_dump_json(),
                    {"annrec.reason": d.reason[:1000]},
                )
                for d in dead_letters
            ),
        ]


class Fenced(AnnrecError):
    """The transactional producer hit a fatal error (another producer took its transactional.id,
    or the broker fenced it): this worker must stop; its open transaction is aborted."""


class TransactionalKafkaSink(KafkaSink):
    """Exactly-once: a batch's replies and dead letters and the consumer's next offsets, in one
    Kafka transaction. Either all of it is visible to read_committed readers (and the group
    resumes after the batch) or none of it (and the batch is served again). The producer must
    have a transactional.id and init_transactions() done.

    Zombie fencing (KIP-447): the offsets are sent with the consumer's group metadata, so a
    worker that lost its partitions in a rebalance cannot commit a transaction for them: the
    coordinator refuses its generation, the transaction is aborted and the batch is the new
    owner's."""

    def write_with_offsets(
        self,
        replies: Sequence[Reply],
        dead_letters: Sequence[DeadLetter],
        offsets: list[TopicPartition],
        group_metadata: object,
        other_groups: Sequence[tuple[list[TopicPartition], object]] = (),
    ) -> None:
        """`other_groups`: the offsets of other consumers' groups in the batch (the
        interactions' consumer), each with its group's metadata, in the same transaction."""
        p, timeout = self._producer, self._flush_timeout_s
        try:
            p.begin_transaction()
            produce_all(p, self._messages(replies, dead_letters), timeout)
            for group_offsets, metadata in [(offsets, group_metadata), *other_groups]:
                if group_offsets:
                    p.send_offsets_to_transaction(group_offsets, metadata, timeout)
            self._commit(timeout)
        except (KafkaException, NotDelivered) as exc:
            self._abort(exc)
            raise SinkError(f"kafka transaction: {exc}") from exc

    def _commit(self, timeout: float) -> None:
        try:
            self._producer.commit_transaction(timeout)
        except KafkaException as exc:
            err = exc.args[0]
            if not (isinstance(err, KafkaError) and err.retriable()):
                raise
            self._producer.commit_transaction(timeout)  # a retriable failure: commit again

    def _abort(self, exc: Exception) -> None:
        err = exc.args[0] if isinstance(exc, KafkaException) else None
        if isinstance(err, KafkaError) and err.fatal():
            raise Fenced(f"transactional producer fenced: {err}") from exc
        try:
            self._producer.abort_transaction(self._flush_timeout_s)
        except KafkaException as abort_exc:
            cause = abort_exc.args[0]
            if isinstance(cause, KafkaError) and cause.fatal():
                raise Fenced(f"transactional producer fenced: {cause}") from abort_exc
            log.warning("abort_failed", error=str(cause))
