"""`annrec chaos interactions`: the stream-kept history under crashes (issue 23). Two workers
consume requests and interaction events; one is killed with SIGKILL and restarted every few
seconds while both flow. A killed worker's last batches were written to Redis but their offsets
not committed, so the group serves them again: the history's writes must make that harmless.

Audit, from what a caller sees: every user's history in Redis is compared with the events
produced for them (each event with its own event_id; fewer per user than the history holds, so
the history must hold them all): an event produced but absent is lost, a member more than the
events produced is double-counted. Requests are audited as in the crash scenario (a reply on
the topic and in Redis for each one)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import redis
from confluent_kafka import Producer

from adapters.interactions import interaction_message
from adapters.kafka_log import client_config
from schemas import keys
from schemas.events import Interaction
from tools.chaos.harness import Cluster, Load, audit, recommend_payload, wait_until
from tools.client import wait_for_workers
from tools.services import Endpoints

HISTORY_LENGTH = 50  # the default; each user gets fewer events than this


def interactions(
    svc: Endpoints,
    rate: int = 400,
    duration_s: float = 60,
    kill_every_s: float = 10,
    n_items: int = 20_000,
) -> dict[str, Any]:
    """`rate` events/s and `rate` requests/s for duration_s; passes when no event is lost or
    double-counted and no request lost."""
    cluster = Cluster.create(svc, n_items)
    cluster.extra_env["ANNREC_HISTORY_LENGTH"] = str(HISTORY_LENGTH)
    t = cluster.topics
    for name in ("w1", "w2"):
        cluster.start(name)
    n_users = len(cluster.factors.user_ids)
    wait_for_workers(svc.kafka, t.topic_requests, t.topic_replies, n_users, 2)
    n_events = int(rate * duration_s)
    users = [f"c{cluster.tag}-{j}" for j in range(max(1, n_events // (HISTORY_LENGTH // 2)))]
    events = [
        Interaction(
            event_id=f"{cluster.tag}-{i}",
            user_id=users[(i * 7919) % len(users)],
            item_id=f"i{(i * 31) % n_items}",
            timestamp=datetime.now(UTC),
        )
        for i in range(n_events)
    ]
    producing = threading.Thread(
        target=_produce, args=(svc.kafka, t.topic_interactions, events, rate), name="events"
    )
    load = Load(
        svc.kafka, t.topic_requests, rate, duration_s, recommend_payload(n_users), "ix"
    ).start()
    producing.start()
    kills = 0
    started = time.monotonic()
    victim = "w1"
    while time.monotonic() - started < duration_s - kill_every_s / 2:
        time.sleep(kill_every_s)
        cluster.kill(victim)
        cluster.start(victim)  # restarted at once
        kills += 1
        victim = "w2" if victim == "w1" else "w1"
    producing.join()
    sent = load.join()
    client = redis.Redis.from_url(svc.redis_url)
    expected = Counter(e.user_id for e in events)
    wait_until(lambda: _held(client, users) >= len(events), timeout_s=120)
    requests, _, dead = audit(svc.kafka, svc.redis_url, t, sent, wait_s=120)
    history = _compare(client, events)
    # What the history absorbed: events delivered again to a worker after a kill.
    history["delivered_again"] = sum(
        int(m.group(1))
        for line in cluster.log_lines("interactions_repeated")
        if (m := re.search(r"count=(\d+)", line["line"]))
    )
    exits = cluster.stop_all()
    passed = (
        history["lost"] == 0
        and history["double_counted"] == 0
        and requests.lost == 0
        and len(dead) == 0
        and kills >= 1
    )
    return {
        "scenario": "interactions",
        "params": {
            "rate": rate,
            "duration_s": duration_s,
            "kill_every_s": kill_every_s,
            "n_items": n_items,
            "workers": 2,
            "users": len(users),
            "max_events_per_user": max(expected.values()),
            "history_length": HISTORY_LENGTH,
        },
        "kills": kills,
        "events_produced": len(events),
        "history": history,
        "audit": requests.as_dict(),
        "worker_exits": exits,
        "passed": passed,
    }


def _produce(kafka: dict[str, str], topic: str, events: list[Interaction], rate: int) -> None:
    producer = Producer({**client_config(kafka), "linger.ms": 2, "enable.idempotence": True})
    start = time.perf_counter()
    for i, event in enumerate(events):
        while (wait := start + i / rate - time.perf_counter()) > 0:
            time.sleep(min(wait, 0.005))
        key, value = interaction_message(event)
        producer.produce(topic, key=key, value=value)
        producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError("some interactions were not acknowledged by the broker")


def _held(client: redis.Redis, users: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for user in users:
        pipe.zcard(keys.history_key(user))
    return int(sum(pipe.execute()))


def _compare(client: redis.Redis, events: list[Interaction]) -> dict[str, int]:
    """Per user, the event ids in Redis against those produced."""
    produced: dict[str, set[str]] = {}
    for e in events:
        produced.setdefault(e.user_id, set()).add(f"id:{e.event_id}")
    pipe = client.pipeline(transaction=False)
    users = sorted(produced)
    for user in users:
        pipe.zrange(keys.history_key(user), 0, -1)
    lost = double = held = 0
    for user, members in zip(users, pipe.execute(), strict=True):
        ids = Counter(json.loads(m)[0] for m in members)
        held += len(members)
        lost += len(produced[user] - set(ids))
        # An event held twice (two members of one event) or a member of no produced event.
        double += sum(c - 1 for c in ids.values()) + len(set(ids) - produced[user])
    return {"held": held, "lost": lost, "double_counted": double}
