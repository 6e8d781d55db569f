"""The worker's side of Kafka: client settings, batches, and offsets stored, committed and rewound.

At-least-once: a message's offset is stored only after both sinks acknowledged its result, and
only stored offsets are committed (automatically every second, on every partition revocation and
at shutdown). A batch whose write failed is rewound to its first offsets and served again.

Shutdown is bounded whatever the broker does (`shut_down`, `StoppableProducer`): with the broker
unreachable nothing is committed (what was written but not committed is served again by the
group: at least once), and no step waits on the broker past its share of the budget.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import structlog
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from worker.parse import RawEvent
from worker.settings import WorkerSettings

log = structlog.get_logger(__name__)


# Set by the broker under KIP-848's group protocol (`group.protocol=consumer`): librdkafka refuses
# them from the client then.
CLASSIC_ONLY = ("partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms")


def consumer_config(settings: WorkerSettings, kafka_conf: dict[str, str]) -> dict[str, object]:
    conf = _consumer_config(settings, kafka_conf)
    if conf.get("group.protocol") == "consumer":
        conf = {k: v for k, v in conf.items() if k not in CLASSIC_ONLY}
    return conf


def _consumer_config(settings: WorkerSettings, kafka_conf: dict[str, str]) -> dict[str, object]:
    return {
        **kafka_conf,
        "group.id": settings.group_id,
        "client.id": settings.worker_id,
        # Offsets are stored by us, after the results are written, and only stored offsets are
        # committed (every second, and synchronously on revoke and at shutdown).
        "enable.auto.offset.store": False,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1000,
        "auto.offset.reset": "earliest",  # a new group must not skip requests already waiting
        "partition.assignment.strategy": "cooperative-sticky",
        "max.poll.interval.ms": 300_000,
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": settings.heartbeat_interval_ms,
        # Read only while the broker is unreachable, to say when it answers again
        # (adapters/kafka_log.py); this consumer is polled at least every poll_timeout_s.
        "statistics.interval.ms": 5000,
        **({"group.instance.id": settings.instance_id} if settings.instance_id else {}),
        **(EXACTLY_ONCE_CONSUMER if settings.processing_guarantee == "exactly-once" else {}),
        **settings.consumer_config,
    }


def interactions_config(settings: WorkerSettings, kafka_conf: dict[str, str]) -> dict[str, object]:
    """The interactions consumer's: the requests consumer's settings, in a group of its own
    (worker/app.py says why), with its own client and static-membership ids."""
    conf = consumer_config(settings, kafka_conf)
    conf["group.id"] = interactions_group(settings.group_id)
    conf["client.id"] = f"{settings.worker_id}-interactions"
    if settings.instance_id:
        conf["group.instance.id"] = f"{settings.instance_id}-interactions"
    return conf


def interactions_group(group_id: str) -> str:
    return f"{group_id}.interactions"


# Exactly-once: offsets go in the batch's transaction, never through the consumer's commits.
EXACTLY_ONCE_CONSUMER = {"enable.auto.commit": False, "isolation.level": "read_committed"}


def producer_config(settings: WorkerSettings, kafka_conf: dict[str, str]) -> dict[str, object]:
    transactional = (
        {
            "transactional.id": transactional_id(settings),
            "transaction.timeout.ms": settings.transaction_timeout_ms,
        }
        if settings.processing_guarantee == "exactly-once"
        else {}
    )
    return {
        **kafka_conf,
        "enable.idempotence": True,
        "linger.ms": 5,
        **transactional,
        **settings.producer_config,
    }


def transactional_id(settings: WorkerSettings) -> str:
    """One per worker, stable when the worker's identity is: a replica restarted with the same
    ANNREC_INSTANCE_ID (or worker id) fences its previous incarnation at init_transactions and
    aborts the transaction it left open, instead of the broker doing so after
    ANNREC_TRANSACTION_TIMEOUT_MS."""
    return f"annrec-{settings.group_id}-{settings.instance_id or settings.worker_id}"


def next_batch(consumer: Consumer, max_messages: int, timeout_s: float) -> list[Message]:
    """Wait for one message, then take whatever else is already fetched, up to max_messages.

    consume(n, timeout) waits for n messages or the whole timeout, so a lone request would wait
    up to poll_timeout_s for company; and its batching changed between releases (2.13.0 returned
    after the first 200 ms slice, confluent-kafka-python #2205). Polling for the first message
    and draining the local queue with timeout 0 answers a lone request at once and still takes
    big batches from a backlog, whatever the release does with a non-zero timeout.
    """
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    if max_messages == 1:
        return [first]
    return [first, *consumer.consume(num_messages=max_messages - 1, timeout=0)]


def raw_events(messages: Sequence[Message]) -> list[RawEvent]:
    events = []
    for m in messages:
        if m.error() is not None:
            log.warning("consume_error", error=str(m.error()))
            continue
        _ts_type, ts = m.timestamp()
        topic, partition, offset = m.topic(), m.partition(), m.offset()
        assert topic is not None and partition is not None and offset is not None  # consumed
        events.append(
            RawEvent(topic, partition, offset, m.key(), m.value(), ts if ts > 0 else None)
        )
    return events


def _next_offsets(events: Sequence[RawEvent], *, first: bool) -> list[TopicPartition]:
    pick: dict[tuple[str, int], int] = {}
    for e in events:
        tp = (e.topic, e.partition)
        offset = e.offset if first else e.offset + 1
        pick[tp] = min(pick.get(tp, offset), offset) if first else max(pick.get(tp, 0), offset)
    return [TopicPartition(t, p, o) for (t, p), o in pick.items()]


def next_offsets(events: Sequence[RawEvent]) -> list[TopicPartition]:
    """Per partition of the batch, the offset after its last event (what a commit records)."""
    return _next_offsets(events, first=False)


def store_offsets(consumer: Consumer, events: Sequence[RawEvent]) -> None:
    try:
        consumer.store_offsets(offsets=_next_offsets(events, first=False))
    except KafkaException as exc:
        # The partition was revoked meanwhile: its next owner re-serves from the last commit
        # (at-least-once), so this is logged, not fatal.
        log.warning("store_offsets_failed", error=str(exc.args[0]))


def commit_stored(consumer: Consumer, why: str) -> None:
    try:
        consumer.commit(asynchronous=False)
    except KafkaException as exc:
        err = exc.args[0]
        if isinstance(err, KafkaError) and err.code() == KafkaError._NO_OFFSET:
            return  # nothing stored since the last commit
        log.warning("commit_failed", when=why, error=str(err))
    except RuntimeError:
        return  # consumer already closed


def rewind(consumer: Consumer, events: Sequence[RawEvent]) -> None:
    for tp in _next_offsets(events, first=True):
        try:
            consumer.seek(tp)
        except KafkaException as exc:  # partition revoked meanwhile: its next owner re-serves it
            log.warning("rewind_failed", partition=tp.partition, error=str(exc.args[0]))


class StoppableProducer(Producer):
    """A producer whose flush() gives up as soon as `give_up()` is true (looked at every
    0.2 s): a worker told to stop while its broker is gone does not wait out the sink's flush
    timeout. What it gives up is purged: its batch's offsets were not stored, so the group
    serves the batch again (at least once)."""

    give_up: Callable[[], bool] = staticmethod(lambda: False)

    def flush(self, timeout: float = -1) -> int:
        deadline = None if timeout < 0 else time.monotonic() + timeout
        while True:
            left = 0.2 if deadline is None else min(0.2, max(deadline - time.monotonic(), 0.0))
            remaining = super().flush(left)
            if remaining == 0 or (deadline is not None and time.monotonic() >= deadline):
                return remaining
            if self.give_up():
                self.purge(in_queue=True, in_flight=True, blocking=False)
                super().poll(0)  # delivery callbacks see the purge
                return remaining


def within(step: Callable[[], object], timeout_s: float) -> bool:
    """Run step on a thread of its own; True if it returned within timeout_s. A step still
    running is left behind (a daemon thread: it does not hold the process)."""
    done = threading.Event()

    def run() -> None:
        try:
            step()
        finally:
            done.set()

    threading.Thread(target=run, name="kafka-shutdown", daemon=True).start()
    return done.wait(timeout_s)


def shut_down(consumer: Consumer, reachable: Callable[[], bool], timeout_s: float) -> None:
    """Commit the stored offsets, then leave the group, both within timeout_s.

    With the broker unreachable the commit is skipped (it would wait for the coordinator).
    A commit that does not return in time leaves the consumer open: closing it beside a
    pending commit is not safe, and the process is exiting anyway; the group then serves from
    the last commit again (at least once)."""
    deadline = time.monotonic() + timeout_s
    if not reachable():
        log.warning("commit_skipped", when="shutdown", reason="kafka_unreachable")
        # Leaving the group needs the coordinator too: a short try, then the session times out.
        deadline = time.monotonic() + min(timeout_s, 0.5)
    elif not within(lambda: commit_stored(consumer, "shutdown"), timeout_s / 2):
        log.warning("commit_timed_out", when="shutdown", timeout_s=round(timeout_s / 2, 1))
        return
    close_s = max(deadline - time.monotonic(), 0.1)
    if not within(consumer.close, close_s):
        log.warning("consumer_close_timed_out", timeout_s=round(close_s, 1))
