"""Where echo's tail at 1,000 requests/s came from (issue 14; BENCHMARKS.md, "Traffic like a
shop's"): an echo worker on the shop mix, each request's hops stamped (its send, the worker's
`served_at`, the reply's arrival), in windows of RATE requests/s for DURATION s. By default
two worker starts with two windows each, every window with a new producer and reply consumer
(what bench e2e did before tools/bench/open_loop.py); with `--kept`, one worker start and three
windows 3 s apart on the same producer and reply consumer.

    flock /tmp/annrec-bench.lock nice -n 5 .venv/bin/python \
        benchmarks/results/e2e-tail-diag/tail_hops.py 1000 10 STORAGE [--kept]

STORAGE: a folder `annrec bench e2e --mix ... --storage STORAGE --build-only` left (any size:
echo does not search). Prints per window the percentiles of each hop and of the whole, and in
which seconds of the window the replies above its p99 were.
"""

import json
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import numpy.typing as npt
from confluent_kafka import Consumer, Producer

from adapters.kafka_log import client_config
from adapters.reply_topic import replies_from_now
from schemas.events import Reply
from schemas.settings import CommonSettings
from tools import services
from tools.bench.e2e import MIX_RUNS, Served, bench_users, started_workers
from tools.bench.traffic import Mix, mixed_requests

ECHO = MIX_RUNS[0]


def _producer(svc: services.Endpoints) -> Producer:
    return Producer({**client_config(svc.kafka), "linger.ms": 1, "enable.idempotence": True})


def _collect(consumer: Consumer, n: int, done: threading.Event) -> dict[str, tuple[float, bytes]]:
    """Each reply's arrival (wall clock) and value by request id, until n or 10 s after done."""
    received: dict[str, tuple[float, bytes]] = {}
    end = None
    while True:
        first = consumer.poll(0.2)
        now = time.time()
        if first is not None and first.error() is None:
            for m in [first, *consumer.consume(num_messages=1000, timeout=0)]:
                if m.error() is None:
                    received.setdefault(m.key().decode(), (now, m.value()))
        if done.is_set():
            end = end or time.time() + 10
            if len(received) >= n or time.time() > end:
                return received


def window(
    svc: services.Endpoints,
    topics: CommonSettings,
    served: Served,
    rate: int,
    duration: float,
    clients: tuple[Producer, Consumer] | None = None,
) -> npt.NDArray[np.float64]:
    """One window: (scheduled, sent, served_at, received) per request, wall-clock seconds;
    on `clients` (producer, reply consumer), else new ones, closed after."""
    n = int(rate * duration)
    producer, consumer = clients or (
        _producer(svc),
        replies_from_now(svc.kafka, topics.topic_replies),
    )
    done = threading.Event()
    result: list[dict[str, tuple[float, bytes]]] = []
    collector = threading.Thread(target=lambda: result.append(_collect(consumer, n, done)))
    collector.start()
    run = uuid.uuid4().hex[:6]
    scheduled, sent = {}, {}
    start = time.time() + 0.2
    assert served.traffic is not None
    for i in range(n):
        at = start + i / rate
        while (wait := at - time.time()) > 0:
            time.sleep(min(wait, 0.005))
        rid = f"{run}-{i}"
        value = served.traffic(rid, i).model_dump_json().encode()
        scheduled[rid], sent[rid] = at, time.time()
        producer.produce(topics.topic_requests, key=rid.encode(), value=value)
        producer.poll(0)
    producer.flush(30)
    done.set()
    collector.join()
    if clients is None:
        consumer.close()
    received = result[0]
    rows = []
    for rid, at in scheduled.items():
        if rid in received:
            arrived, value = received[rid]
            served_at = Reply.model_validate_json(value).served_at.timestamp()
            rows.append((at, sent[rid], served_at, arrived))
    return np.array(rows)


def report(rows: npt.NDArray[np.float64]) -> None:
    at, sent, served_at, arrived = rows.T
    hops = {
        "send_late": sent - at,
        "to_served": served_at - sent,
        "reply_back": arrived - served_at,
        "total": arrived - at,
    }
    for name, x in hops.items():
        pct = {q: round(float(np.percentile(x * 1000, q)), 1) for q in (50, 90, 99, 99.9)}
        print(f"  {name:<10} ms {pct} max {round(float(x.max() * 1000), 1)}")
    total = hops["total"]
    slow = total > np.percentile(total, 99)
    print(
        "  replies above p99 by second of the window:",
        np.bincount((at[slow] - at[0]).astype(int)).tolist(),
    )


def main() -> None:
    rate, duration, storage = int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
    kept = "--kept" in sys.argv
    n_items = json.loads((storage / "bench-catalogue.json").read_text())["items"]
    with services.configured_or_local() as svc:
        n_users = bench_users(n_items)
        mix = mixed_requests(
            Mix.parse("similar=50,recommend=40,filtered=10"), 1.0, n_items, n_users
        )
        served = Served(svc.kafka, svc.redis_url, storage, n_users, 1000.0, mix)
        for start in range(1 if kept else 2):
            with started_workers(served, ECHO) as workers:
                clients = None
                if kept:
                    topic = workers.topics.topic_replies
                    clients = (_producer(svc), replies_from_now(svc.kafka, topic))
                for w in range(3 if kept else 2):
                    print(f"worker start {start}, window {w} ({'kept' if kept else 'new'} clients)")
                    report(window(svc, workers.topics, served, rate, duration, clients))
                    if kept:
                        time.sleep(3)


if __name__ == "__main__":
    main()
