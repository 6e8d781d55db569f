"""The serving loop: consume a batch, answer it, write Redis and Kafka, then store the offsets.

At-least-once: a message's offset is stored only after both sinks acknowledged its result, and
only stored offsets are committed (automatically every second, on every partition revocation and
at shutdown). When a write fails, the consumer seeks back to the batch's first offsets and serves
the batch again after a backoff, so nothing is lost; a reply may then be written twice (same
request_id, harmless). A stop request (SIGTERM/SIGINT) only sets an event: the current batch
finishes, its offsets are committed, and the consumer leaves the group.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Sequence

import redis
import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from threadpoolctl import threadpool_limits

from adapters.item_updates import ItemUpdateLog
from adapters.topics import ensure_topics, topic_specs
from schemas import keys
from schemas.events import Reply
from worker.announcements import AnnouncementFollower
from worker.answer import (
    Outcome,
    Parsed,
    Policy,
    RawEvent,
    answer_batch,
    echo_batch,
    parse_batch,
)
from worker.availability import Availability
from worker.index_store import IndexStore, LoadedVersion
from worker.metrics import HealthState, WorkerMetrics, serve_http
from worker.progress import PartitionProgress
from worker.settings import WorkerSettings
from worker.shadow import Publish, ShadowSampler
from worker.sinks import KafkaSink, RedisSink, ReplyCache, SinkError
from worker.version_source import version_source

log = structlog.get_logger(__name__)


class Heartbeat:
    """The worker's entry in Redis for `annrec status`: refreshed every TTL/3 seconds, deleted at
    shutdown; a crashed worker's entry expires. A Redis error here is logged, never fatal."""

    def __init__(self, client: redis.Redis, settings: WorkerSettings, worker: Worker) -> None:
        self._client, self._settings, self._worker = client, settings, worker
        self._key = keys.worker_key(settings.worker_id)
        self._started = time.time()
        self._next = 0.0

    def beat(self, version: LoadedVersion) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._settings.heartbeat_ttl_s / 3
        w, s = self._worker, self._settings
        recall = {}
        if w.shadow is not None:
            for kind in ("similar_items", "recommend"):
                found = w.shadow.recall(kind, version.version)
                if found is not None:
                    recall[kind] = {"recall": round(found[0], 4), "samples": found[1]}
        doc = {
            "worker_id": s.worker_id,
            "group": s.group_id,
            "version": version.version,
            "version_created_at": version.manifest.created_at.isoformat(),
            "started_at": self._started,
            "uptime_s": round(time.time() - self._started, 1),
            "processed": w.served,
            "dead_lettered": w.dead_lettered,
            "partitions": sorted(w.assigned),
            "live_recall": recall,
            "item_updates_read": w.availability.read,
            "metrics_port": w.http_port,
        }
        try:
            self._client.set(self._key, json.dumps(doc), ex=s.heartbeat_ttl_s)
        except redis.RedisError as exc:
            log.warning("heartbeat_failed", error=str(exc))

    def gone(self) -> None:
        try:
            self._client.delete(self._key)
        except redis.RedisError as exc:
            log.warning("heartbeat_failed", error=str(exc))


def _recall_publisher(client: redis.Redis, ttl_s: int) -> Publish:
    def publish(version: str, kind: str, recall: float, samples: int) -> None:
        key = keys.recall_key(version)
        pipe = client.pipeline(transaction=False)
        pipe.hset(key, mapping={kind: f"{recall:.4f}", f"{kind}:samples": samples})
        pipe.expire(key, ttl_s)
        pipe.execute()

    return publish


def consumer_config(settings: WorkerSettings, kafka_conf: dict[str, str]) -> dict[str, object]:
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
        **({"group.instance.id": settings.instance_id} if settings.instance_id else {}),
        **settings.consumer_config,
    }


def producer_config(settings: WorkerSettings, kafka_conf: dict[str, str]) -> dict[str, object]:
    return {**kafka_conf, "enable.idempotence": True, "linger.ms": 5, **settings.producer_config}


class Worker:
    def __init__(
        self, settings: WorkerSettings, kafka_conf: dict[str, str], redis_url: str
    ) -> None:
        self.settings = settings
        self._kafka_conf = kafka_conf
        self._redis_url = redis_url
        self.metrics = WorkerMetrics()
        self.shadow: ShadowSampler | None = None
        self.progress = PartitionProgress(settings.stall_after_s)
        self._announced: dict[str, float] = {}
        self._serving_since: tuple[str, float] = ("", 0.0)
        self._observed: set[str] = set()
        self._next_progress = 0.0
        self.health = HealthState(max_poll_gap_s=settings.health_max_poll_gap_s)
        self.served = 0
        self.dead_lettered = 0
        self.batch_sizes: deque[int] = deque(maxlen=10_000)  # recent ones, for tests and benches
        self.assigned: set[int] = set()
        self.http_port: int | None = None
        self.availability: Availability

    def run(self, stop: threading.Event) -> None:
        s = self.settings
        ensure_topics(self._kafka_conf, topic_specs(s))
        self.availability = Availability(
            ItemUpdateLog(self._kafka_conf, s.topic_item_updates), self.metrics
        )
        self.availability.replay(s.item_updates_replay_s)
        follower = AnnouncementFollower(self._kafka_conf, s.topic_index_versions)
        self._announced = follower.announced
        store = IndexStore(
            version_source(s.storage, s.cache_dir, s.storage_options),
            poll_interval_s=s.index_poll_interval_s,
            checksums=s.verify_checksums,
            wakeup=follower.wait,
            on_refused=lambda _v, _r: self.metrics.refusals.inc(),
        )
        http = (
            serve_http(s.metrics_port, self.metrics, self.health) if s.metrics_port >= 0 else None
        )
        self.http_port = http.server_address[1] if http else None
        store.start()
        consumer = Consumer(consumer_config(s, self._kafka_conf))
        producer = Producer(producer_config(s, self._kafka_conf))
        client = redis.Redis.from_url(self._redis_url, socket_timeout=s.redis_timeout_s)
        redis_sink = RedisSink(client, s.reply_ttl_s, s.result_ttl_s)
        cache = ReplyCache(client, s.result_ttl_s) if s.serve_from_cache else None
        kafka_sink = KafkaSink(producer, s.topic_replies, s.topic_dead_letters)
        # One BLAS thread: a worker answers one request at a time and scales out by processes;
        # OpenBLAS threads spinning beside Kafka, Redis and other workers only add latency.
        if s.shadow_fraction > 0 and not s.echo:
            self.shadow = ShadowSampler(
                self.metrics.registry,
                s.shadow_fraction,
                s.shadow_queue,
                s.shadow_window,
                self._policy(),
                publish=_recall_publisher(client, s.result_ttl_s),
                cpu_share=s.shadow_cpu_share,
            ).start()
        heartbeat = Heartbeat(client, s, self)
        blas = threadpool_limits(limits=s.blas_threads, user_api="blas")
        try:
            version = self._wait_for_index(store, stop)
            if version is None:
                return
            consumer.subscribe(
                [s.topic_requests],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            log.info(
                "worker_started",
                worker_id=s.worker_id,
                group=s.group_id,
                topic=s.topic_requests,
                version=version.version,
                metrics_port=self.http_port,
            )
            while not stop.is_set():
                messages = next_batch(consumer, s.batch_size, s.poll_timeout_s)
                self.health.polled()
                heartbeat.beat(version)
                self._track_progress(consumer, version)
                self.metrics.last_poll.set_to_current_time()
                events = _events(messages)
                version = self._current(store, version)
                # Availability changes land between batches: the next batch sees them all.
                self.availability.refresh(version)
                if not events:
                    continue
                self._serve(consumer, events, version, redis_sink, kafka_sink, cache, stop)
        finally:
            _commit_stored(consumer, "shutdown")
            consumer.close()  # leaves the group now, so partitions move without a session timeout
            producer.flush(10)
            heartbeat.gone()
            store.stop()  # before the follower closes: its watcher thread polls the follower
            if self.shadow is not None:
                self.shadow.stop()
            follower.close()
            self.availability.close()
            if http is not None:
                http.shutdown()
            blas.restore_original_limits()
            log.info(
                "worker_stopped",
                worker_id=s.worker_id,
                served=self.served,
                dead_lettered=self.dead_lettered,
            )

    def _serve(
        self,
        consumer: Consumer,
        events: list[RawEvent],
        version: LoadedVersion,
        redis_sink: RedisSink,
        kafka_sink: KafkaSink,
        cache: ReplyCache | None,
        stop: threading.Event,
    ) -> None:
        parsed = parse_batch(events)
        cached = _cached(cache, parsed, version)
        if self.settings.echo:
            outcome = echo_batch(parsed, version, self.settings.worker_id)
        else:
            outcome = answer_batch(parsed, version, self.settings.worker_id, self._policy(), cached)
        started = time.perf_counter()
        try:
            redis_sink.write(outcome.replies)
            if cache is not None:
                cache.store(parsed, outcome, version.version)
            kafka_sink.write(outcome.replies, outcome.dead_letters)
        except SinkError as exc:
            self.metrics.write_failures.inc()
            log.error("batch_not_written", reason=str(exc), size=len(events))
            _rewind(consumer, events)
            stop.wait(self.settings.retry_backoff_s)
            return
        _store_offsets(consumer, events)
        self._sample(parsed, outcome, version, cached)
        self._count(events, outcome, time.perf_counter() - started, len(cached))

    def _count(self, events: list[RawEvent], outcome: Outcome, write_s: float, hits: int) -> None:
        self.metrics.record_batch(len(events), outcome, write_s)
        self.metrics.cache_hits.inc(hits)
        self.batch_sizes.append(len(events))
        self.served += sum(1 for r in outcome.replies if r.status != "error")
        self.dead_lettered += len(outcome.dead_letters)
        for dead in outcome.dead_letters:
            log.warning(
                "dead_letter",
                reason=dead.reason,
                request_id=dead.request_id,
                partition=dead.source_partition,
                offset=dead.source_offset,
            )

    def _sample(
        self,
        parsed: list[Parsed],
        outcome: Outcome,
        version: LoadedVersion,
        cached: dict[str, Reply],
    ) -> None:
        """Offer answered requests to the live recall sampler (after the write: never delays)."""
        if self.shadow is None:
            return
        requests = {p.request.request_id: p.request for p in parsed if p.request is not None}
        for reply in outcome.replies:
            request = requests.get(reply.request_id)
            if request is not None and reply.request_id not in cached:
                self.shadow.offer(request, reply, version)

    def _policy(self) -> Policy:
        return Policy(cold_start=self.settings.cold_start)

    def _current(self, store: IndexStore, serving: LoadedVersion) -> LoadedVersion:
        version = store.current()
        assert version is not None
        if version.version != serving.version:
            self.availability.adopt(version)
            self._announce_serving(version, serving.version)
        return version

    def _announce_serving(self, version: LoadedVersion, previous: str | None) -> None:
        self.metrics.serving(version.version, version.manifest.created_at.timestamp(), previous)
        self.health.version = version.version
        self._serving_since = (version.version, time.time())
        self._observe_announcement()

    def _observe_announcement(self) -> None:
        """The announcement-to-serving delay, once per version. The watcher also reads LATEST
        on its own, so a version can be served before its announcement is read: the delay is
        then observed (as 0) when the announcement arrives."""
        served, since = self._serving_since
        announced = self._announced.get(served)
        if announced is None or served in self._observed:
            return
        self._observed.add(served)
        delay = max(since - announced, 0.0)
        self.metrics.announce_to_serve.observe(delay)
        log.info("version_serving", version=served, since_announced_s=round(delay, 2))

    def _track_progress(self, consumer: Consumer, version: LoadedVersion) -> None:
        """Lag per assigned partition (cached watermarks: no broker round trip), stalls, and the
        served version's age; once a second."""
        now = time.monotonic()
        if now < self._next_progress:
            return
        self._next_progress = now + 1.0
        self._observe_announcement()
        topic = self.settings.topic_requests
        parts = [TopicPartition(topic, p) for p in sorted(self.assigned)]
        try:
            positions = consumer.position(parts) if parts else []
        except KafkaException:
            return
        for tp in positions:
            _, high = consumer.get_watermark_offsets(tp, cached=True)
            if tp.offset < 0 or high < 0:  # nothing fetched yet on this partition
                continue
            lag = self.progress.update(tp.partition, tp.offset, high, now)
            self.metrics.lag.labels(str(tp.partition)).set(lag)
        self.health.stalled = self.progress.stalled(now)
        self.metrics.stalled.set(len(self.health.stalled))
        self.metrics.index_age.set(time.time() - version.manifest.created_at.timestamp())

    def _wait_for_index(self, store: IndexStore, stop: threading.Event) -> LoadedVersion | None:
        """Requests are not consumed before a version can answer them (they wait in Kafka)."""
        logged = False
        while not stop.is_set():
            self.health.polled()  # waiting for an index is not a stalled loop
            version = store.current()
            if version is not None:
                self.availability.adopt(version)
                self._announce_serving(version, None)
                return version
            if not logged:
                log.info("waiting_for_index", storage=self.settings.storage)
                logged = True
            stop.wait(self.settings.index_poll_interval_s)
        return None

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned |= {p.partition for p in partitions}
        log.info("partitions_assigned", partitions=sorted(p.partition for p in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # What this worker wrote is committed before the partitions move, so the next owner
        # does not serve it again.
        _commit_stored(consumer, "revoke")
        self._forget(partitions)
        log.info("partitions_revoked", partitions=sorted(p.partition for p in partitions))

    def _forget(self, partitions: list[TopicPartition]) -> None:
        """Partitions that are another worker's now: no lag or stall of ours to report."""
        self.assigned -= {p.partition for p in partitions}
        for p in partitions:
            self.progress.forget(p.partition)
            with contextlib.suppress(KeyError):  # never measured: no label to remove
                self.metrics.lag.remove(str(p.partition))

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost (session timed out): another worker owns them already; committing would fail.
        self._forget(partitions)
        log.warning("partitions_lost", partitions=sorted(p.partition for p in partitions))


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


def _cached(
    cache: ReplyCache | None, parsed: list[Parsed], version: LoadedVersion
) -> dict[str, Reply]:
    return cache.lookup(parsed, version.version) if cache is not None else {}


def _events(messages: Sequence[Message]) -> list[RawEvent]:
    events = []
    for m in messages:
        if m.error() is not None:
            log.warning("consume_error", error=str(m.error()))
            continue
        _ts_type, ts = m.timestamp()
        events.append(
            RawEvent(
                m.topic(), m.partition(), m.offset(), m.key(), m.value(), ts if ts > 0 else None
            )
        )
    return events


def _next_offsets(events: Sequence[RawEvent], *, first: bool) -> list[TopicPartition]:
    pick: dict[tuple[str, int], int] = {}
    for e in events:
        tp = (e.topic, e.partition)
        offset = e.offset if first else e.offset + 1
        pick[tp] = min(pick.get(tp, offset), offset) if first else max(pick.get(tp, 0), offset)
    return [TopicPartition(t, p, o) for (t, p), o in pick.items()]


def _store_offsets(consumer: Consumer, events: Sequence[RawEvent]) -> None:
    try:
        consumer.store_offsets(offsets=_next_offsets(events, first=False))
    except KafkaException as exc:
        # The partition was revoked meanwhile: its next owner re-serves from the last commit
        # (at-least-once), so this is logged, not fatal.
        log.warning("store_offsets_failed", error=str(exc.args[0]))


def _commit_stored(consumer: Consumer, why: str) -> None:
    try:
        consumer.commit(asynchronous=False)
    except KafkaException as exc:
        err = exc.args[0]
        if isinstance(err, KafkaError) and err.code() == KafkaError._NO_OFFSET:
            return  # nothing stored since the last commit
        log.warning("commit_failed", when=why, error=str(err))
    except RuntimeError:
        return  # consumer already closed


def _rewind(consumer: Consumer, events: Sequence[RawEvent]) -> None:
    for tp in _next_offsets(events, first=True):
        try:
            consumer.seek(tp)
        except KafkaException as exc:  # partition revoked meanwhile: its next owner re-serves it
            log.warning("rewind_failed", partition=tp.partition, error=str(exc.args[0]))
