"""The request/reply bridge: produce a request event, wait for its reply on the reply topic.

One consumer per gateway replica, on a thread of its own, reads every partition of the reply
topic from the moment the replica starts (adapters.reply_topic: assign(), no group) and routes
each reply by its key, the request_id, to the request waiting for it (gateway.pending); replies
no request of this replica waits for are dropped after a dict lookup on the key, unparsed.

Why every replica reads every reply (docs/operations.md, Gateway): the workers key a reply by
request_id, so it lands on whatever partition that hash picks; sending it to the replica that
waits would need a reply-to in the request contract and workers honouring it. Reading all of
them costs each replica a key lookup per reply of the whole fleet, which is far below the cost of
the HTTP requests it serves itself (measured in BENCHMARKS.md, gateway); a fleet so large that
it is not would move to a reply-to partition per replica.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import structlog
from confluent_kafka import Consumer, KafkaError, Message, Producer

from adapters.kafka_log import client_config
from adapters.reply_topic import replies_from_now
from gateway.pending import Delivered, PendingReplies
from schemas.events import RecommendRequest, SimilarItemsRequest

log = structlog.get_logger(__name__)

AnyRequest = SimilarItemsRequest | RecommendRequest
POLL_S = 0.1  # longest the thread blocks: bounds how late a stop or a delivery report is seen
BATCH = 1000


class NotSent(Exception):
    """Kafka did not take the request (delivery failed, or the local queue is full)."""


@dataclass
class BridgeCounters:
    """Read by /metrics and /healthz."""

    replies_routed: int = 0
    replies_ignored: int = 0  # for other replicas, or arrived after their request gave up
    last_poll: float = 0.0


class KafkaBridge:
    def __init__(
        self,
        kafka_conf: dict[str, str],
        requests_topic: str,
        replies_topic: str,
        *,
        read_committed: bool = False,
    ) -> None:
        self.pending = PendingReplies()
        self.counters = BridgeCounters()
        self._kafka_conf = kafka_conf
        self._requests_topic, self._replies_topic = requests_topic, replies_topic
        self._read_committed = read_committed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # linger.ms 1: a request is one small message and someone waits for it; the default
        # 5 ms would be added to every request's latency at low rates.
        self._producer = Producer(
            {**client_config(kafka_conf), "linger.ms": 1, "enable.idempotence": True}
        )

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Position the consumer at the end of every reply partition (before any request can be
        produced: no reply can be missed), then start routing on a thread."""
        self._loop = loop
        consumer = replies_from_now(
            self._kafka_conf, self._replies_topic, read_committed=self._read_committed
        )
        self.counters.last_poll = time.monotonic()
        self._thread = threading.Thread(
            target=self._route, args=(consumer,), name="gateway-replies", daemon=True
        )
        self._thread.start()
        log.info("gateway_bridge_started", replies=self._replies_topic)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        left = self._producer.flush(5)
        if left:
            log.warning("gateway_requests_not_delivered", count=left)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def ask(self, request: AnyRequest, timeout_s: float) -> Delivered:
        """Send `request` and wait for its reply; TimeoutError past timeout_s, NotSent when Kafka
        does not take it, AlreadyWaiting when its id is being waited for already."""
        rid = request.request_id
        with self.pending.waiting(rid) as future:
            self._produce(request)
            return await asyncio.wait_for(future, timeout_s)

    def _produce(self, request: AnyRequest) -> None:
        rid = request.request_id
        # Keyed by subject, as `annrec request` does: one user's requests stay in order.
        key = (request.subject_id or rid).encode()
        try:
            self._producer.produce(
                self._requests_topic,
                key=key,
                value=request.model_dump_json().encode(),
                on_delivery=lambda err, _msg: self._delivered(rid, err),
            )
        except BufferError as exc:
            raise NotSent("the Kafka producer's queue is full") from exc

    def _delivered(self, request_id: str, err: KafkaError | None) -> None:
        """On the routing thread (it polls the producer): a failed delivery fails its waiter."""
        if err is not None and self._loop is not None:
            failure = NotSent(f"request not delivered to Kafka: {err.str()}")
            self._loop.call_soon_threadsafe(self.pending.fail, request_id, failure)

    def _route(self, consumer: Consumer) -> None:
        try:
            while not self._stop.is_set():
                self._producer.poll(0)  # delivery reports
                first = consumer.poll(POLL_S)
                self.counters.last_poll = time.monotonic()
                if first is None:
                    continue
                self._hand_over([first, *consumer.consume(num_messages=BATCH, timeout=0)])
        except Exception:
            log.exception("gateway_bridge_failed")  # /healthz turns 503: the thread is gone
            raise
        finally:
            consumer.close()

    def _hand_over(self, messages: list[Message]) -> None:
        """The messages some request of this replica waits for, to the event loop in one call."""
        read_at = time.perf_counter()
        mine: list[tuple[str, bytes]] = []
        for m in messages:
            key = m.key() if m.error() is None else None
            rid = key.decode("utf-8", "replace") if key else None
            if rid is not None and rid in self.pending:
                mine.append((rid, m.value() or b""))
            else:
                self.counters.replies_ignored += 1
        if mine and self._loop is not None:
            self.counters.replies_routed += len(mine)
            self._loop.call_soon_threadsafe(self.pending.deliver, mine, read_at)
