"""The serving loop: consume a batch, answer it, write Redis and Kafka, then store the offsets.

At-least-once (worker/consumer.py): a message's offset is stored only after both sinks
acknowledged its result. When a write fails, the consumer seeks back to the batch's first offsets
and serves the batch again after a backoff, so nothing is lost; a reply may then be written twice
(same request_id, harmless). A stop request (SIGTERM/SIGINT) only sets an event: the current
batch finishes, its offsets are committed, and the consumer leaves the group. A lost broker is
said once (`kafka_unreachable`, adapters/kafka_log.py); the worker keeps its version and state,
and a stop then takes at most STOP_BUDGET_S for Kafka: no commit, replies not yet delivered
dropped (their offsets were not stored: the group serves them again).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import redis
import structlog
from confluent_kafka import Consumer, KafkaException, TopicPartition
from threadpoolctl import threadpool_limits

from adapters.item_updates import ItemUpdateLog
from adapters.item_vectors import ItemVectorLog
from adapters.kafka_log import client_config, link
from adapters.redis_client import redis_refusal
from adapters.topics import ensure_topics, topic_specs
from adapters.version_storage import ModelCatalog
from schemas import keys
from schemas.errors import AnnrecError
from schemas.events import Reply
from worker.announcements import AnnouncementFollower
from worker.answer import (
    Outcome,
    Policy,
    answer_batch,
    cached_outcome,
    dead_letter,
    echo_batch,
)
from worker.availability import Availability
from worker.cache import CacheEntry, ReplyCache
from worker.consumer import (
    StoppableProducer,
    commit_stored,
    consumer_config,
    interactions_config,
    next_batch,
    next_offsets,
    producer_config,
    raw_events,
    rewind,
    shut_down,
    store_offsets,
)
from worker.fresh import FreshItems, refused_events
from worker.heartbeat import Heartbeat
from worker.history import RedisHistory
from worker.index_store import IndexStore, LoadedVersion, NotServed, Serving
from worker.interactions import parse_interactions
from worker.metrics import HealthState, WorkerMetrics, held_versions, serve_http
from worker.parse import Parsed, RawEvent, parse_batch
from worker.progress import PartitionProgress
from worker.routing import Router
from worker.settings import WorkerSettings
from worker.shadow import Publish, ShadowSampler
from worker.shedding import OverloadDetector
from worker.sinks import KafkaSink, RedisSink, SinkError, TransactionalKafkaSink

log = structlog.get_logger(__name__)

# Kafka's share of a stop (commit + leave the group, then the producer's last flush): a worker
# exits within 5 s of SIGTERM whatever the broker does.
STOP_BUDGET_S = 3.0
# The longest a fetched interaction waits to be written while no request comes (the loop's
# request poll is at most this long).
INTERACTIONS_WAIT_S = 0.1


def _recall_publisher(client: redis.Redis, ttl_s: int) -> Publish:
    def publish(version: str, kind: str, recall: float, samples: int) -> None:
        key = keys.recall_key(version)
        pipe = client.pipeline(transaction=False)
        pipe.hset(key, mapping={kind: f"{recall:.4f}", f"{kind}:samples": samples})
        pipe.expire(key, ttl_s)
        pipe.execute()

    return publish


def _check_redis(client: redis.Redis, url: str) -> None:
    """A Redis that refuses the password never will: stop now, with the setting to check. One
    that is down may come back: said once; writes retry (nothing is stored before they land)."""
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise AnnrecError(redis_refusal(url, exc)) from exc
    except redis.RedisError as exc:
        log.warning("redis_unreachable", reason=redis_refusal(url, exc))


@dataclass
class _Clients:
    """What one run holds open; closed by the run's ExitStack."""

    store: IndexStore
    consumer: Consumer
    producer: StoppableProducer
    redis_sink: RedisSink
    kafka_sink: KafkaSink
    cache: ReplyCache | None
    history: RedisHistory
    interactions: Consumer  # the interactions topic's, in a group of its own (interactions_group)


REFUSED_SHOWN = 5


class Worker:
    def __init__(
        self, settings: WorkerSettings, kafka_conf: dict[str, str], redis_url: str
    ) -> None:
        self.settings = settings
        self._kafka_conf = kafka_conf
        self.kafka = link(kafka_conf)  # reachable or not, as this process's clients saw it
        self._redis_url = redis_url
        self.metrics = WorkerMetrics()
        self.shadow: ShadowSampler | None = None
        self.progress = PartitionProgress(settings.stall_after_s)
        self._announced: dict[str, float] = {}
        self._serving_since: tuple[str, float] = ("", 0.0)
        self._serving: LoadedVersion | None = None  # read by the heartbeat's thread
        self._started = time.time()
        self._overload = OverloadDetector(settings.shed_wait_ms / 1000, settings.shed_after_s)
        self._observed: set[str] = set()
        self._next_progress = 0.0
        self.health = HealthState(max_poll_gap_s=settings.health_max_poll_gap_s)
        self.served = 0
        self.dead_lettered = 0
        self.interactions_read = 0  # valid interaction events written to the history
        self.batch_sizes: deque[int] = deque(maxlen=10_000)  # recent ones, for tests and benches
        self.assigned: set[int] = set()
        self._snapshot: Serving | None = None  # what the last batch was answered with
        # The primary model's other versions held (experiment candidates, pins): they get the
        # item-updates topic too (worker/availability.py), adopted when first held.
        self._siblings: list[LoadedVersion] = []
        # requests answered per (model, experiment arm; "none": no experiment assigned it)
        self.arm_requests: Counter[tuple[str, str]] = Counter()
        self.http_port: int | None = None
        self.availability: Availability
        self.fresh: FreshItems

    def run(self, stop: threading.Event) -> None:
        s = self.settings
        with contextlib.ExitStack() as resources:
            resources.callback(self._log_stopped)
            clients = self._open(resources, stop)
            version = self._wait_for_index(clients.store, stop)
            if version is None:
                return
            # One loop for requests and interactions: a batch's interactions are in the history
            # before its requests are answered, and one procedure writes everything and then
            # stores both consumers' offsets (exactly-once: sends both in the batch's
            # transaction). Two consumers, each in a group of its own: one consumer of both
            # topics lets the assignor balance the partition count, not each topic, so a worker
            # could get every interactions partition and no request partition (seen: with two
            # workers, one answered no request).
            # The same side consumer reads the item-vectors topic for its dead letters: each
            # event checked by one worker of the group (every worker's segment reads them all).
            clients.interactions.subscribe(
                [s.topic_interactions, s.topic_item_vectors],
                on_revoke=self._on_interactions_revoke,
                on_lost=self._on_lost,
            )
            clients.consumer.subscribe(
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
                interactions=s.topic_interactions,
                version=version.version,
                metrics_port=self.http_port,
            )
            while not stop.is_set():
                version = self._step(clients, version, stop)

    def _open(self, resources: contextlib.ExitStack, stop: threading.Event) -> _Clients:
        """Open everything a run needs, each registered to close in the reverse order: the
        consumer commits and leaves the group first (bounded: `shut_down`), the metrics
        endpoint goes last."""
        s = self.settings
        client = redis.Redis.from_url(self._redis_url, socket_timeout=s.redis_timeout_s)
        resources.callback(client.close)
        _check_redis(client, self._redis_url)  # first: a refusal needs no broker to be said
        ensure_topics(self._kafka_conf, topic_specs(s))
        # One BLAS thread: a worker answers one request at a time and scales out by processes;
        # OpenBLAS threads spinning beside Kafka, Redis and other workers only add latency.
        blas = threadpool_limits(limits=s.blas_threads, user_api="blas")
        resources.callback(blas.restore_original_limits)
        if s.metrics_port >= 0:
            http = serve_http(s.metrics_port, self.metrics, self.health)
            resources.callback(http.shutdown)
            self.http_port = http.server_address[1]
        updates = ItemUpdateLog(self._kafka_conf, s.topic_item_updates)
        self.availability = Availability(updates, self.metrics)
        resources.callback(self.availability.close)
        self.availability.replay(s.item_updates_replay_s)
        vectors = ItemVectorLog(self._kafka_conf, s.topic_item_vectors)
        self.fresh = FreshItems(vectors, self.metrics, s.fresh_max_items)
        resources.callback(self.fresh.close)
        self.fresh.replay(s.item_vectors_replay_s)
        follower = AnnouncementFollower(self._kafka_conf, s.topic_index_versions)
        resources.callback(follower.close)
        self._announced = follower.announced
        self.shadow = self._start_shadow(client)
        if self.shadow is not None:
            resources.callback(self.shadow.stop)
        store = self._start_store(follower)
        resources.callback(store.stop)  # before the follower closes: its watcher polls it
        resources.callback(follower.interrupt)  # the watcher's wait ends now, not in 2 s
        heartbeat = Heartbeat(
            client, s.worker_id, s.heartbeat_ttl_s, lambda: self._status(store.refused)
        ).start()
        resources.callback(heartbeat.stop)  # before the store stops: the document reads it
        producer = StoppableProducer(client_config(producer_config(s, self._kafka_conf)))
        exactly_once = s.processing_guarantee == "exactly-once"
        if exactly_once:  # fences an earlier producer of this transactional.id, aborts its txn
            producer.init_transactions(STOP_BUDGET_S * 6)
        # A stopping worker does not wait for a broker that is gone (its batch is not stored).
        producer.give_up = lambda: stop.is_set() and not self.kafka.reachable
        resources.callback(self._flush_last, producer)
        consumer = Consumer(client_config(consumer_config(s, self._kafka_conf)))
        # Commits, then leaves the group now: no session timeout for the others to wait out.
        resources.callback(shut_down, consumer, lambda: self.kafka.reachable, STOP_BUDGET_S * 2 / 3)
        interactions = Consumer(client_config(interactions_config(s, self._kafka_conf)))
        resources.callback(
            shut_down, interactions, lambda: self.kafka.reachable, STOP_BUDGET_S * 2 / 3
        )
        return _Clients(
            store=store,
            consumer=consumer,
            producer=producer,
            redis_sink=RedisSink(client, s.reply_ttl_s, s.result_ttl_s),
            kafka_sink=(TransactionalKafkaSink if exactly_once else KafkaSink)(
                producer, s.topic_replies, s.topic_dead_letters
            ),
            cache=ReplyCache(client, s.result_ttl_s) if s.serve_from_cache else None,
            history=RedisHistory(client, s.history_length, s.history_max_age_s),
            interactions=interactions,
        )

    def _start_store(self, follower: AnnouncementFollower) -> IndexStore:
        s = self.settings
        store = IndexStore(
            ModelCatalog(s.storage, s.storage_options, s.cache_dir),
            poll_interval_s=s.index_poll_interval_s,
            checksums=s.verify_checksums,
            wakeup=follower.wait,
            on_refused=lambda _v, _r: self.metrics.refusals.inc(),
            memory_budget_bytes=s.memory_budget_mb << 20,
            models=s.models,
            max_adhoc_pins=s.max_pinned_versions,
        )
        store.start()
        return store

    def _start_shadow(self, client: redis.Redis) -> ShadowSampler | None:
        s = self.settings
        if s.shadow_fraction <= 0 or s.echo:
            return None
        return ShadowSampler(
            self.metrics.registry,
            s.shadow_fraction,
            s.shadow_queue,
            s.shadow_window,
            self._policy(),
            publish=_recall_publisher(client, s.result_ttl_s),
            cpu_share=s.shadow_cpu_share,
        ).start()

    def _step(self, c: _Clients, version: LoadedVersion, stop: threading.Event) -> LoadedVersion:
        """One turn of the loop: poll a batch, keep the books, swap versions, serve the batch."""
        s = self.settings
        # A short wait for requests: interactions fetched meanwhile are written at least every
        # INTERACTIONS_WAIT_S even when no request comes (other workers' replies read them).
        messages = next_batch(c.consumer, s.batch_size, min(s.poll_timeout_s, INTERACTIONS_WAIT_S))
        messages += c.interactions.consume(num_messages=s.batch_size, timeout=0)
        self.health.polled()
        c.producer.poll(0)  # its log lines and errors, when idle, are served here
        self._track_progress(c.consumer, version)
        self.metrics.last_poll.set_to_current_time()
        events = raw_events(messages)
        version = self._current(c.store, version)
        self._follow(c.store.serving())
        # Availability changes land between batches: the next batch sees them all.
        self.availability.refresh(version, self._siblings)
        self.fresh.refresh(version, self.availability.values)
        if events:
            self._serve(c, events, version, stop)
        else:
            self._overload.observe(None, time.monotonic())  # nothing waits: not behind
        return version

    def _serve(
        self, c: _Clients, events: list[RawEvent], version: LoadedVersion, stop: threading.Event
    ) -> None:
        request_events, side_events = self._by_consumer(events)
        vector_topic = self.settings.topic_item_vectors
        parsed = parse_batch(request_events)
        interactions = parse_interactions([e for e in side_events if e.topic != vector_topic])
        refused_vectors = refused_events(
            [e for e in side_events if e.topic == vector_topic], version
        )
        try:  # first: this batch's requests see this batch's interactions
            added = c.history.write(interactions.valid)
            histories = c.history.read(_asking_users(parsed))
        except SinkError as exc:
            self._not_written(c, events, exc, stop)
            return
        # A personalised reply changes with every interaction: never from (or into) the cache.
        personal = [p for p in parsed if _user_of(p) in histories]
        fixed = [p for p in parsed if _user_of(p) not in histories]
        router = Router(c.store.serving(), c.store.pinned)
        hits, misses, groups = _cache_split(c.cache, fixed, router)
        shed = self._overload.observe(_youngest_wait_s(events, time.time()), time.monotonic())
        self.metrics.shedding.set(int(shed))
        if self.settings.echo:
            outcome = echo_batch(misses + personal, version, self.settings.worker_id)
        else:
            outcome = answer_batch(
                misses + personal,
                router,
                self.settings.worker_id,
                self._policy(shed),
                histories=histories,
            )
        entries = (
            [e for tag, group in groups for e in c.cache.entries(group, outcome.replies, tag)]
            if c.cache
            else []
        )
        outcome.extend(cached_outcome(hits, self._policy(shed)))
        outcome.dead_letters += [
            dead_letter(event, reason, self.settings.worker_id)
            for event, reason in interactions.refused + refused_vectors
        ]
        started = time.perf_counter()
        if not self._write_then_store_offsets(c, events, outcome, entries, stop):
            return
        self._sample(misses, outcome, router)  # personalised ones: the sampler has no history
        self._count(events, outcome, time.perf_counter() - started, len(hits))
        self._count_interactions(len(interactions.valid), added, len(interactions.refused))

    def _count_interactions(self, valid: int, added: int, invalid: int) -> None:
        self.interactions_read += valid
        self.metrics.interactions.labels("new").inc(added)
        self.metrics.interactions.labels("invalid").inc(invalid)
        if valid > added:  # delivered again (a batch served again after a crash): no effect
            self.metrics.interactions.labels("repeated").inc(valid - added)
            log.info("interactions_repeated", count=valid - added)

    def _write_then_store_offsets(
        self,
        c: _Clients,
        events: list[RawEvent],
        outcome: Outcome,
        cache_entries: list[CacheEntry],
        stop: threading.Event,
    ) -> bool:
        """The one commit procedure: Redis (replies and cache entries, one pipeline), then Kafka
        (replies and dead letters, flushed), then the offsets. A failed write stores nothing:
        the batch is rewound and served again after a backoff. True when written.

        Exactly-once: Kafka's part is one transaction holding the replies, the dead letters
        and the offsets (Redis writes are idempotent by key: a batch served again rewrites the
        same keys); an aborted transaction is a failed write."""
        transactional = isinstance(c.kafka_sink, TransactionalKafkaSink)
        try:
            c.redis_sink.write(outcome.replies, cache_entries)
            if isinstance(c.kafka_sink, TransactionalKafkaSink):
                requests, interactions = self._by_consumer(events)
                c.kafka_sink.write_with_offsets(
                    outcome.replies,
                    outcome.dead_letters,
                    next_offsets(requests),
                    c.consumer.consumer_group_metadata(),
                    [(next_offsets(interactions), c.interactions.consumer_group_metadata())],
                )
            else:
                c.kafka_sink.write(outcome.replies, outcome.dead_letters)
        except SinkError as exc:
            self._not_written(c, events, exc, stop)
            return False
        if not transactional:
            requests, interactions = self._by_consumer(events)
            store_offsets(c.consumer, requests)
            store_offsets(c.interactions, interactions)
        return True

    def _by_consumer(self, events: list[RawEvent]) -> tuple[list[RawEvent], list[RawEvent]]:
        """(the requests consumer's events, the side consumer's: interactions, item vectors)."""
        side = (self.settings.topic_interactions, self.settings.topic_item_vectors)
        return [e for e in events if e.topic not in side], [e for e in events if e.topic in side]

    def _not_written(
        self, c: _Clients, events: list[RawEvent], exc: SinkError, stop: threading.Event
    ) -> None:
        """Nothing of the batch is stored: rewound, served again after a backoff."""
        self.metrics.write_failures.inc()
        log.error("batch_not_written", reason=str(exc), size=len(events))
        requests, interactions = self._by_consumer(events)
        rewind(c.consumer, requests)
        rewind(c.interactions, interactions)
        stop.wait(self.settings.retry_backoff_s)

    def _follow(self, serving: Serving) -> None:
        """A new snapshot (a model's LATEST, an experiment or a pin changed): the versions held
        and their arms into annrec_model_version_info."""
        if serving is self._snapshot:
            return
        before = held_versions(self._snapshot) if self._snapshot else set()
        self.metrics.holding(held_versions(serving), before)
        self._snapshot = serving
        primary = serving.primary
        model = next((m for m in serving.models.values() if m.latest is primary), None)
        known = {id(v) for v in self._siblings}
        self._siblings = [v for v in (model.held.values() if model else []) if v is not primary]
        for v in self._siblings:
            if id(v) not in known:
                self.availability.adopt(v)

    def _count(self, events: list[RawEvent], outcome: Outcome, write_s: float, hits: int) -> None:
        self.metrics.record_batch(len(events), outcome, write_s)
        self.arm_requests.update((s.model, s.variant or "none") for s in outcome.served if s.model)
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

    def _sample(self, answered: list[Parsed], outcome: Outcome, router: Router) -> None:
        """Offer computed answers to the live recall sampler (after the write: never delays),
        each with the version that computed it (its recall is kept per version, so each arm of
        an experiment has its own); answers from the cache were sampled when computed."""
        if self.shadow is None:
            return
        requests = {p.request.request_id: p.request for p in answered if p.request is not None}
        for reply in outcome.replies:
            request = requests.get(reply.request_id)
            version = router.version_named(reply.index_version)
            if request is not None and version is not None and not reply.from_cache:
                self.shadow.offer(request, reply, version)

    def _status(self, refused: dict[str, str]) -> dict[str, Any] | None:
        """This worker as `annrec status` shows it (the heartbeat's document, built on the
        heartbeat's thread from values the loop keeps current); None before a version serves."""
        version = self._serving
        if version is None:
            return None
        s = self.settings
        recall = {}
        if self.shadow is not None:
            for kind in ("similar_items", "recommend"):
                found = self.shadow.recall(kind, version.version)
                if found is not None:
                    recall[kind] = {"recall": round(found[0], 4), "samples": found[1]}
        return {
            "worker_id": s.worker_id,
            "group": s.group_id,
            "version": version.version,
            "version_created_at": version.manifest.created_at.isoformat(),
            "started_at": self._started,
            "processed": self.served,
            "dead_lettered": self.dead_lettered,
            "partitions": sorted(self.assigned),
            "live_recall": recall,
            "item_updates_read": self.availability.read,
            "item_vectors_read": self.fresh.read,
            "fresh_items": version.fresh.size,
            "interactions_read": self.interactions_read,
            "metrics_port": self.http_port,
            # The versions this worker refused (the last few), with the reason: `annrec status`
            # says so when LATEST names one of them.
            "refused": dict(list(dict(refused).items())[-REFUSED_SHOWN:]),
            "models": self._models_status(),
        }

    def _models_status(self) -> dict[str, Any]:
        """Every model served: LATEST, the experiment's arms with the version each serves and
        the requests this worker answered in each, the versions held; and the models not served
        (with the reason)."""
        snapshot = self._snapshot
        if snapshot is None:
            return {}
        counts = dict(self.arm_requests)
        doc: dict[str, Any] = {}
        for name, m in snapshot.models.items():
            arms = m.experiment.arms if m.experiment else []
            doc[name] = {
                "latest": m.latest.version,
                "experiment": m.experiment.name if m.experiment else None,
                "arms": {
                    a.name: {
                        "version": m.arm_version(a).version,
                        "share": a.share,
                        "requests": counts.get((name, a.name), 0),
                    }
                    for a in arms
                },
                "requests": sum(n for (model, _), n in counts.items() if model == name),
                "held": sorted(m.held),
            }
        for name, reason in snapshot.unavailable.items():
            doc[name] = {"unavailable": reason}
        return doc

    def _flush_last(self, producer: StoppableProducer) -> None:
        """Whatever is still queued belongs to a batch whose offsets were not stored."""
        left = producer.flush(STOP_BUDGET_S / 3 if self.kafka.reachable else 0.0)
        if left:
            log.warning("replies_not_delivered", count=left, detail="served again by the group")

    def _log_stopped(self) -> None:
        log.info(
            "worker_stopped",
            worker_id=self.settings.worker_id,
            served=self.served,
            dead_lettered=self.dead_lettered,
        )

    def _policy(self, shed: bool = False) -> Policy:
        """The answer policy; while shedding (sustained overload), requests without their own
        deadline expire past the shed wait rather than the default deadline."""
        s = self.settings
        deadline = s.default_deadline_ms or None
        if shed and s.shed_wait_ms:
            deadline = min(deadline or s.shed_wait_ms, s.shed_wait_ms)
        return Policy(
            cold_start=s.cold_start,
            default_deadline_ms=deadline,
            personalization=s.personalization_policy,
            exclude_history=s.exclude_history,
        )

    def _current(self, store: IndexStore, serving: LoadedVersion) -> LoadedVersion:
        version = store.current()
        assert version is not None
        if version.version != serving.version:
            self.availability.adopt(version)
            self.fresh.adopt(version, self.availability.values)
            self._announce_serving(version, serving.version)
        return version

    def _announce_serving(self, version: LoadedVersion, previous: str | None) -> None:
        self.metrics.serving(version.version, version.manifest.created_at.timestamp(), previous)
        self.health.version = version.version
        self._serving_since = (version.version, time.time())
        self._serving = version
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
                self.fresh.adopt(version, self.availability.values)
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
        # does not serve it again. Not with the broker gone: that would wait for it.
        # (Exactly-once: the offsets were committed with each batch's transaction.)
        if self.kafka.reachable and self.settings.processing_guarantee == "at-least-once":
            commit_stored(consumer, "revoke")
        self._forget(partitions)
        log.info("partitions_revoked", partitions=sorted(p.partition for p in partitions))

    def _forget(self, partitions: list[TopicPartition]) -> None:
        """Partitions that are another worker's now: no lag or stall of ours to report."""
        partitions = [p for p in partitions if p.topic == self.settings.topic_requests]
        self.assigned -= {p.partition for p in partitions}
        for p in partitions:
            self.progress.forget(p.partition)
            with contextlib.suppress(KeyError):  # never measured: no label to remove
                self.metrics.lag.remove(str(p.partition))

    def _on_interactions_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # As for requests: what was written is committed before the partitions move.
        if self.kafka.reachable and self.settings.processing_guarantee == "at-least-once":
            commit_stored(consumer, "revoke")
        log.info("interactions_revoked", partitions=sorted(p.partition for p in partitions))

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost (session timed out): another worker owns them already; committing would fail.
        self._forget(partitions)
        log.warning("partitions_lost", partitions=sorted(p.partition for p in partitions))


def _user_of(p: Parsed) -> str | None:
    """The user a recommend names by user_id (whose history it is answered with)."""
    request = p.request
    if request is None or request.kind != "recommend":
        return None
    return request.user_id


def _asking_users(parsed: list[Parsed]) -> set[str]:
    return {u for p in parsed if (u := _user_of(p)) is not None}


def _cache_split(
    cache: ReplyCache | None, parsed: list[Parsed], router: Router
) -> tuple[list[tuple[Parsed, Reply]], list[Parsed], list[tuple[str, list[Parsed]]]]:
    """(hits, misses, the misses by cache tag): each request is looked up under the tag of the
    version its route names (worker/routing.py: model, pin or experiment arm). Requests that
    route nowhere (an unknown model) are misses: answer_batch refuses them with the reason."""
    if cache is None:
        return [], parsed, []
    by_tag: dict[str, list[Parsed]] = {}
    unrouted: list[Parsed] = []
    for p in parsed:
        try:
            tag = router.route(p.request).cache_tag if p.request is not None else None
        except NotServed:
            tag = None
        if tag is None:
            unrouted.append(p)
        else:
            by_tag.setdefault(tag, []).append(p)
    hits: list[tuple[Parsed, Reply]] = []
    groups: list[tuple[str, list[Parsed]]] = []
    for tag, group in by_tag.items():
        found, missed = cache.split(group, tag)
        hits += found
        groups.append((tag, missed))
    return hits, unrouted + [p for _, g in groups for p in g], groups


def _youngest_wait_s(events: list[RawEvent], now: float) -> float | None:
    """How long the freshest request of a batch waited in the topic (None: no timestamps)."""
    stamps = [e.timestamp_ms for e in events if e.timestamp_ms]
    return now - max(stamps) / 1000 if stamps else None
