"""What every chaos scenario needs: services, a published version, fresh topics, worker processes
that can be killed for real, an open-loop load, and the audit of what came back.

Workers run as child processes (`python -m tools.cli worker`) so `kill -9` is a real crash: no
finally blocks, no shutdown commit. The audit reads the whole reply and dead-letter topics from the
beginning and every request's Redis reply key, so "nothing lost" is checked against the outputs a
caller sees, not against the worker's own counters.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from adapters.kafka_log import client_config
from adapters.topics import ensure_topics, topic_specs
from index_builder.inputs import Factors
from index_builder.publish import BuildOptions, publish_version
from index_builder.synth import synth_factors
from schemas import keys
from schemas.events import DeadLetter, Reply
from schemas.settings import CommonSettings, prefixed_topics, topic_env
from tools.services import Endpoints

# Every worker process and temporary folder any scenario started: a scenario that fails
# half-way must not leave workers behind (they would spin against a stopped broker), and none
# leaves its folders in /tmp.
_STARTED: list[subprocess.Popen[bytes]] = []
_FOLDERS: list[Path] = []


def stop_leftover_workers() -> int:
    """Kill the workers still running; returns how many there were."""
    alive = [p for p in _STARTED if p.poll() is None]
    for proc in alive:
        proc.kill()
        proc.wait(timeout=30)
    _STARTED.clear()
    return len(alive)


def temp_folder(prefix: str) -> Path:
    """A new folder under the system's temporary directory, removed by clean_up()."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    _FOLDERS.append(folder)
    return folder


def clean_up() -> None:
    """After a scenario: its workers stopped, then its folders removed."""
    stop_leftover_workers()
    for folder in _FOLDERS:
        shutil.rmtree(folder, ignore_errors=True)
    _FOLDERS.clear()


@dataclass
class Cluster:
    """Fresh topics and group, a storage with one published version, and worker processes."""

    svc: Endpoints
    storage: Path
    factors: Factors
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, svc: Endpoints, n_items: int, seed: int = 1) -> Cluster:
        storage = temp_folder("annrec-chaos-")
        factors = synth_factors(n_items, max(100, n_items // 10), 32, seed=seed)
        publish_version(factors, storage, BuildOptions(n_trees=10, quality_queries=100))
        cluster = cls(svc, storage, factors)
        ensure_topics(svc.kafka, topic_specs(cluster.topics))
        return cluster

    @property
    def topics(self) -> CommonSettings:
        return CommonSettings(**prefixed_topics(f"chaos{self.tag}"))

    def env(self, name: str) -> dict[str, str]:
        t = self.topics
        return {
            **os.environ,
            "ANNREC_KAFKA_BOOTSTRAP": self.svc.kafka["bootstrap.servers"],
            "ANNREC_REDIS_URL": self.svc.redis_url,
            "ANNREC_STORAGE": str(self.storage),
            **topic_env(t),
            "ANNREC_GROUP_ID": f"chaos{self.tag}",
            "ANNREC_WORKER_ID": name,
            "ANNREC_METRICS_PORT": "0",
            "ANNREC_RETRY_BACKOFF_S": "0.5",
            **self.extra_env,
        }

    def start(self, name: str) -> None:
        log = (self.storage / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "worker"],
            env=self.env(name),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _STARTED.append(self.procs[name])

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown, no final commit; what a crash or an OOM kill does."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def stop_all(self) -> dict[str, int | None]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        return {name: proc.wait(timeout=60) for name, proc in self.procs.items()}

    def crashed(self) -> list[str]:
        """Workers that exited on their own (not killed by the scenario)."""
        return [n for n, p in self.procs.items() if p.poll() not in (None, -signal.SIGKILL)]

    def log_lines(self, event: str) -> list[dict[str, Any]]:
        """Structured log lines (JSON or key=value) of every worker that mention `event`, whole:
        the fields scenarios look for (a refused version's name) may come after a long reason."""
        found = []
        for path in self.storage.glob("*.log"):
            for line in path.read_text(errors="replace").splitlines():
                if event in line:
                    found.append({"worker": path.stem, "line": line})
        return found


class Load:
    """Open-loop requests at a fixed rate in a thread; payload(i, request_id) -> bytes."""

    def __init__(
        self,
        kafka: dict[str, str],
        topic: str,
        rate: float,
        duration_s: float,
        payload: Callable[[int, str], bytes],
        prefix: str = "r",
        schedule: list[float] | None = None,
    ) -> None:
        """schedule: each request's send time in seconds from the start (instead of `rate`
        for `duration_s`): phases of different rates."""
        self.schedule = schedule or [i / rate for i in range(int(rate * duration_s))]
        self.sent: list[str] = []
        # request id -> (partition, its timestamp in ms: create time, set when produced)
        self.delivered: dict[str, tuple[int, int]] = {}
        self._args = (kafka, topic, rate, duration_s, payload, prefix)
        self._thread = threading.Thread(target=self._run, name="load")
        self.errors: list[str] = []

    def start(self) -> Load:
        self._thread.start()
        return self

    def join(self) -> list[str]:
        self._thread.join()
        return self.sent

    def _run(self) -> None:
        kafka, topic, _rate, _duration_s, payload, prefix = self._args
        producer = Producer({**client_config(kafka), "linger.ms": 2, "enable.idempotence": True})
        start = time.perf_counter()

        def on_delivery(err: object, msg: Any) -> None:
            if err is None:
                self.delivered[msg.key().decode()] = (msg.partition(), msg.timestamp()[1])

        for i, at in enumerate(self.schedule):
            while (wait := start + at - time.perf_counter()) > 0:
                time.sleep(min(wait, 0.005))
            rid = f"{prefix}-{i}"
            value = payload(i, rid)
            try:
                producer.produce(topic, key=rid.encode(), value=value, on_delivery=on_delivery)
            except BufferError:
                producer.poll(0.1)
                producer.produce(topic, key=rid.encode(), value=value, on_delivery=on_delivery)
            self.sent.append(rid)
            producer.poll(0)
        if producer.flush(60) != 0:
            self.errors.append("some requests were not acknowledged by the broker")


def read_topic(
    kafka: dict[str, str], topic: str, idle_s: float = 3.0, *, read_committed: bool = False
) -> list[bytes]:
    """Every message of a topic from the beginning, until nothing new for idle_s;
    read_committed: only those of committed transactions (and every non-transactional one)."""
    consumer = Consumer(
        {
            **client_config(kafka),
            "group.id": f"audit-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        }
    )
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    values: list[bytes] = []
    last = time.monotonic()
    while time.monotonic() - last < idle_s:
        for msg in consumer.consume(1000, timeout=0.5):
            if msg.error() is None and (value := msg.value()) is not None:
                values.append(value)
                last = time.monotonic()
    consumer.close()
    return values


@dataclass
class Audit:
    sent: int
    replied: int  # distinct request ids with a reply on the reply topic
    lost: int  # sent, but no reply on the topic or no reply key in Redis
    lost_ids: list[str]
    duplicates: int  # extra replies beyond the first, per request id
    statuses: dict[str, int]
    versions: dict[str | None, int]  # replies per index version
    dead_letters: int
    missing_in_redis: int

    def as_dict(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        d["lost_ids"] = self.lost_ids[:20]
        return d


def audit(
    kafka: dict[str, str],
    redis_url: str,
    topics: CommonSettings,
    sent: list[str],
    wait_s: float = 60.0,
    *,
    read_committed: bool = False,
) -> tuple[Audit, list[Reply], list[DeadLetter]]:
    """Wait until every sent id has a reply (or wait_s passes), then count; read_committed:
    as a reader with isolation.level=read_committed sees the topics (exactly-once workers)."""
    wanted = set(sent)
    deadline = time.monotonic() + wait_s
    while True:
        raw = read_topic(kafka, topics.topic_replies, read_committed=read_committed)
        replies = [Reply.model_validate_json(v) for v in raw]
        seen = {r.request_id for r in replies}
        if wanted <= seen or time.monotonic() > deadline:
            break
        time.sleep(2.0)
    dead = [
        DeadLetter.model_validate_json(v)
        for v in read_topic(kafka, topics.topic_dead_letters, read_committed=read_committed)
    ]
    per_id = Counter(r.request_id for r in replies if r.request_id in wanted)
    client = redis.Redis.from_url(redis_url)
    missing_redis: list[str] = []
    ids = list(wanted)
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        pipe = client.pipeline(transaction=False)
        for rid in chunk:
            pipe.exists(keys.reply_key(rid))
        missing_redis += [rid for rid, ok in zip(chunk, pipe.execute(), strict=True) if not ok]
    lost = sorted((wanted - set(per_id)) | set(missing_redis))
    result = Audit(
        sent=len(sent),
        replied=len(per_id),
        lost=len(lost),
        lost_ids=lost,
        duplicates=sum(c - 1 for c in per_id.values()),
        statuses=dict(Counter(r.status for r in replies if r.request_id in wanted)),
        versions=dict(Counter(r.index_version for r in replies if r.request_id in wanted)),
        dead_letters=len(dead),
        missing_in_redis=len(missing_redis),
    )
    return result, replies, dead


def recommend_payload(n_users: int) -> Callable[[int, str], bytes]:
    def make(i: int, rid: str) -> bytes:
        return json.dumps(
            {"request_id": rid, "kind": "recommend", "user_id": f"u{(i * 7919) % n_users}"}
        ).encode()

    return make


def wait_until(check: Callable[[], bool], timeout_s: float, step_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step_s)
    return check()
