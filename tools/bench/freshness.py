"""`annrec bench freshness` (issue 16): items upserted between builds, served from the fresh
segment.

1. The segment's cost and quality, in process: a seeded synthetic catalogue of --items + --fresh
   items (one draw, so the fresh ones look like the rest) is cut in two: the first --items are
   built into a version (the default build), the last --fresh are upserted into its segment.
   For the same users and items, interleaved, answer() runs on the version without a segment
   and with it: recall@10 against exact brute force over what each serves (the version; the
   version + segment), and the thread time of each answer (p50/p99 and their ratios).
2. Freshness through Kafka: one default worker serving that version, --rate requests/s
   (recommend by user_id) while --upserts items/s are upserted, each built to be the top item
   of a random query vector that is then asked at once (and again while a reply does not hold
   the item yet): upsert produced -> first reply holding it, p50/p90/p99/max; the requests'
   latency without and with upserts, side by side; requests sent and answered (none lost).

Writes freshness.json and freshness.png (the delay's distribution).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Producer
from threadpoolctl import threadpool_limits

from adapters.kafka_log import client_config
from adapters.topics import ensure_topics, topic_specs
from index_builder.inputs import Factors
from index_builder.publish import BuildOptions, publish_version
from index_builder.synth import synth_factors
from query_engine.vectors import cosine_scores, recall_at_k, top_k
from schemas.events import ItemVector, RecommendRequest, Reply, SimilarItemsRequest
from schemas.settings import CommonSettings, prefixed_topics
from tools import processes, services
from tools.bench.cli import add_quick, add_storage, apply_quick, kept_storage, kept_version
from tools.bench.e2e import Run, Served, worker_env
from tools.bench.machine import describe, machine_info
from tools.bench.personalization_delay import _percentiles
from tools.client import ReplyWaiter, wait_for_workers
from worker.answer import answer
from worker.fresh import apply_event
from worker.index_store import LoadedVersion, load_version

QUICK = {"items": 20_000, "fresh": 1_000, "queries": 100, "duration": 5.0, "rate": 100}
DRAIN_S = 20.0


def register(parser: argparse.ArgumentParser) -> None:
    add_quick(parser, QUICK)
    parser.add_argument("--items", type=int, default=1_000_000, help="items in the version")
    parser.add_argument("--fresh", type=int, default=10_000, help="items in the segment")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=300, help="per kind, in process")
    parser.add_argument("--rate", type=int, default=500, help="requests/s through Kafka")
    parser.add_argument("--upserts", type=int, default=100, help="upserts/s through Kafka")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per phase")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--segment-only",
        action="store_true",
        help="only the in-process part (the segment's cost and recall), no Kafka phase: the "
        "p99 ratios move between runs by more than a change moves them, so they are run again",
    )
    add_storage(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    a = apply_quick(args)
    out: Path = a.out
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    print(f"machine: {describe(info)}")
    print(f"parameters: {a.items} items + {a.fresh} fresh x {a.dim}, seed {a.seed}")
    result: dict[str, Any] = {"command": "annrec " + " ".join(sys.argv[1:]), "machine": info}
    with tempfile.TemporaryDirectory(prefix="annrec-fresh-") as tmp:
        storage = kept_storage(a) or Path(tmp)
        whole = synth_factors(a.items + a.fresh, max(1000, a.items // 10), a.dim, seed=a.seed)
        version, fresh = split(whole, a.items)
        catalogue = {"items": a.items, "fresh": a.fresh, "dim": a.dim, "seed": a.seed}
        result["version"] = kept_version(
            storage, catalogue, lambda: publish_version(version, storage, BuildOptions())
        )
        if a.build_only:
            print(f"version {result['version']} in {storage}")
            return 0
        # One BLAS thread, as a worker runs (worker/app.py): several threads spinning on two
        # shared cores made a 10k x 64 product measure 10 ms instead of 0.2.
        with threadpool_limits(limits=1, user_api="blas"):
            result["segment"] = segment_cost(storage, version, fresh, a.queries, a.seed)
        _print_segment(result["segment"])
        if not a.segment_only:
            result["freshness"] = freshness(storage, version, a.rate, a.upserts, a.duration, a.seed)
            _print_freshness(result["freshness"])
    (out / "freshness.json").write_text(json.dumps(result, indent=2))
    if a.segment_only:
        print(f"wrote {out / 'freshness.json'}")
        return 0
    _plot(result["freshness"], out / "freshness.png")
    print(f"wrote {out / 'freshness.json'} and {out / 'freshness.png'}")
    return 0


WARMUP = 50  # answers of each kind and version before the timed ones
# Each query answered this many times by each, alternating, its time the median: the p99 of
# 1,000 single timings is the 10th-worst, a stray interrupt's (the version's own similar-items
# p99 read 0.049 and 0.151 ms in two runs of the same code); the median keeps what a query
# costs (more candidates, a deeper scan) and drops what one timing suffered.
REPEATS = 5


def split(whole: Factors, n: int) -> tuple[Factors, list[ItemVector]]:
    """(the first n items as the version's factors, the others as upserts)."""
    version = replace(
        whole,
        item_factors=np.ascontiguousarray(whole.item_factors[:n]),
        item_ids=whole.item_ids[:n],
        item_popularity=None if whole.item_popularity is None else whole.item_popularity[:n],
    )
    fresh = [
        ItemVector(item_id=str(i), vector=v.tolist())
        for i, v in zip(whole.item_ids[n:], whole.item_factors[n:], strict=True)
    ]
    return version, fresh


def segment_cost(
    storage: Path, factors: Factors, fresh: list[ItemVector], queries: int, seed: int
) -> dict[str, Any]:
    name = (storage / "LATEST").read_text().strip()
    plain, served = load_version(storage, name), load_version(storage, name)
    load_before = os.getloadavg()
    applied = []  # thread time of each upsert
    for event in fresh:
        started = time.thread_time()
        apply_event(served, event)
        applied.append((time.thread_time() - started) * 1000)
    started = time.thread_time()  # then the neighbours of every one (a worker: between batches)
    found = served.fresh.settle(np.inf)
    settled_s = time.thread_time() - started
    combined = np.concatenate([factors.item_factors, np.asarray([e.vector for e in fresh])])
    ids = np.concatenate([factors.item_ids.astype(str), [e.item_id for e in fresh]])
    norms = np.linalg.norm(combined, axis=1).astype(np.float32)
    rng = np.random.default_rng(seed)
    users = rng.choice(len(factors.user_ids), queries, replace=False)
    items = rng.choice(len(factors.item_ids), queries, replace=False)
    out: dict[str, Any] = {
        "items": len(factors.item_ids),
        "fresh": len(fresh),
        "queries": queries,
        "repeats": REPEATS,
        "upsert_ms": {
            "p50": round(float(np.percentile(applied, 50)), 3),
            "p99": round(float(np.percentile(applied, 99)), 3),
            "total_s": round(sum(applied) / 1000, 1),
        },
        "neighbours_found_ms_each": round(settled_s * 1000 / max(found, 1), 3),
    }
    n = len(factors.item_ids)
    for kind in ("recommend", "similar_items"):
        recall: dict[str, list[float]] = {"without": [], "with": []}
        if kind == "recommend":
            requests: list[Any] = [
                RecommendRequest(request_id="b", user_id=str(factors.user_ids[u])) for u in users
            ]
        else:
            requests = [
                SimilarItemsRequest(request_id="b", item_id=str(factors.item_ids[i])) for i in items
            ]
        times, replied = _timed_answers(requests, {"without": plain, "with": served})
        for j in range(queries):
            if kind == "recommend":
                scores = combined @ factors.user_factors[users[j]]
            else:
                scores = cosine_scores(combined, norms, combined[items[j]])
                scores[items[j]] = -np.inf
            for label, m in (("without", n), ("with", len(combined))):
                truth = ids[top_k(scores[:m], 10)]
                recall[label].append(recall_at_k(replied[label][j], truth))
        out[kind] = {
            label: {
                "recall_at_10": round(float(np.mean(recall[label])), 4),
                "p50_ms": round(float(np.percentile(times[label], 50)), 3),
                "p99_ms": round(float(np.percentile(times[label], 99)), 3),
            }
            for label in times
        }
        out[kind]["p99_with_vs_without"] = round(
            out[kind]["with"]["p99_ms"] / out[kind]["without"]["p99_ms"], 2
        )
        out[kind]["p50_with_vs_without"] = round(
            out[kind]["with"]["p50_ms"] / out[kind]["without"]["p50_ms"], 2
        )
    _close(plain, served)
    out["load_average"] = {"before": load_before, "after": os.getloadavg()}
    return out


def _timed_answers(
    requests: list[Any], versions: dict[str, LoadedVersion]
) -> tuple[dict[str, list[float]], dict[str, list[list[str]]]]:
    """Each request answered by each version REPEATS times, alternating (neither first): per
    version, each request's median thread time (ms) and its first reply's item ids.

    Back to back, as a worker runs them, the truths computed after: an answer timed after a
    truth's scan (256 MB of factors read) ran on cold caches, and the segment's path, touching
    more memory, paid more for it than the version's (timed each after its truth: similar items
    p50 0.198 -> 0.342 ms; in blocks of 50 after their truths, still 0.099 ms without the
    segment, against 0.025 back to back)."""
    pair = list(versions.items())
    for _, version in pair:  # untimed warm-up: the first answers meet cold paths
        for request in requests[:WARMUP]:
            answer(request, version, "bench")
    times: dict[str, list[float]] = {label: [] for label in versions}
    replied: dict[str, list[list[str]]] = {label: [] for label in versions}
    for j, request in enumerate(requests):
        taken: dict[str, list[float]] = {label: [] for label in versions}
        for repeat in range(REPEATS):
            for label, version in pair if (j + repeat) % 2 == 0 else pair[::-1]:
                started = time.thread_time()
                reply = answer(request, version, "bench")
                taken[label].append((time.thread_time() - started) * 1000)
                if not repeat:
                    replied[label].append([i.item_id for i in reply.items])
        for label in versions:
            times[label].append(float(np.median(taken[label])))
    return times, replied


def _close(*versions: LoadedVersion) -> None:
    for v in versions:
        v.close()


def freshness(
    storage: Path, factors: Factors, rate: int, upserts: int, duration_s: float, seed: int
) -> dict[str, Any]:
    with services.configured_or_local() as svc:
        tag = uuid.uuid4().hex[:8]
        topics = CommonSettings(**prefixed_topics(f"bench{tag}"))
        ensure_topics(svc.kafka, topic_specs(topics))
        served = Served(svc.kafka, svc.redis_url, storage, len(factors.user_ids), 1000.0)
        log = (storage / "worker.log").open("ab")
        worker = processes.start_worker(worker_env(served, Run("freshness", 1), topics, tag), log)
        try:
            # A 1M version takes minutes to load on a busy machine: wait for it, not for 2 min.
            wait_for_workers(
                svc.kafka, topics.topic_requests, topics.topic_replies, 10, 1, timeout_s=900
            )
            args = (svc.kafka, topics, factors, rate, duration_s, seed)
            # A discarded warm-up first: the first seconds fault the version's pages in, which
            # would land on whichever phase ran first.
            warm = (svc.kafka, topics, factors, rate, min(duration_s, 5.0), seed + 1)
            _load(*warm, upserts=upserts, produce=False)
            load_before = os.getloadavg()
            # The same request stream without and with the upserts: the probes' user_vector
            # requests are sent in both (once each without), so only the upserts differ.
            without = _load(*args, upserts=upserts, produce=False)
            figures = _load(*args, upserts=upserts, produce=True)
        finally:
            processes.stop([worker])
            log.close()
    before, after = without["request_to_reply_ms"], figures["request_to_reply_ms"]
    return {
        "items": len(factors.item_ids),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        **figures,
        "request_to_reply_without_upserts_ms": before,
        "requests_sent_without_upserts": without["requests_sent"],
        "requests_answered_without_upserts": without["requests_answered"],
        "request_p99_with_vs_without_upserts": (
            round(after["p99"] / before["p99"], 2) if after["p99"] and before["p99"] else None
        ),
    }


def _load(
    kafka: dict[str, str],
    topics: CommonSettings,
    factors: Factors,
    rate: int,
    duration_s: float,
    seed: int,
    *,
    upserts: int,
    produce: bool,
) -> dict[str, Any]:
    """`rate` requests/s for duration_s; every rate/upserts-th one a probe: a recommend by the
    vector a new item is built for, after that item's upsert when `produce`."""
    rng = np.random.default_rng(seed + upserts)
    n = int(rate * duration_s)
    every = max(1, rate // upserts) if upserts else 0
    top = float(np.linalg.norm(factors.item_factors, axis=1).max()) * 3
    probe = _Probe(kafka, topics)
    collector = threading.Thread(target=probe.collect)
    collector.start()
    start = time.perf_counter() + 0.2
    for i in range(n):
        while (wait := start + i / rate - time.perf_counter()) > 0:
            time.sleep(min(wait, 0.005))
        if every and i % every == 0:
            query = rng.normal(size=factors.dim).astype(np.float32)
            query /= np.linalg.norm(query)
            item = f"fresh-{probe.run}-{i}"
            if produce:
                event = ItemVector(item_id=item, vector=(query * top).tolist())
                probe.upsert(event, topics.topic_item_vectors, query.tolist())
            else:
                request = RecommendRequest(request_id=f"{item}-0", user_vector=query.tolist())
                probe.ask(request, None)
        else:
            user = str(factors.user_ids[rng.integers(len(factors.user_ids))])
            probe.ask(RecommendRequest(request_id=f"{probe.run}-r{i}", user_id=user), None)
        probe.producer.poll(0)
    probe.finish(collector)
    delays = np.asarray(list(probe.delays.values()))
    return {
        "rate": rate,
        "upserts_per_s": upserts if produce else 0,
        "duration_s": duration_s,
        "upserts": len(probe.produced_at),
        "visible": len(delays),
        "retries": probe.retries,
        "requests_sent": probe.sent,
        "requests_answered": probe.answered,
        "upsert_to_first_reply_ms": _percentiles(delays),
        "request_to_reply_ms": _percentiles(np.asarray(probe.request_ms)),
        "delays_ms": [round(float(d), 2) for d in delays],
    }


class _Probe:
    """Sends requests and upserts; a probe's reply without its item asks again at once; the
    first that holds it sets the item's delay (ms from its upsert's produce())."""

    def __init__(self, kafka: dict[str, str], topics: CommonSettings) -> None:
        self.producer = Producer(
            {**client_config(kafka), "linger.ms": 1, "enable.idempotence": True}
        )
        self.replies = ReplyWaiter(kafka, topics.topic_replies)
        self.topic = topics.topic_requests
        self.run = uuid.uuid4().hex[:6]
        self.produced_at: dict[str, float] = {}
        self.delays: dict[str, float] = {}
        self.request_ms: list[float] = []
        self.retries = self.sent = self.answered = 0
        self._asked: dict[str, tuple[str | None, list[float] | None, float]] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._end = float("inf")

    def upsert(self, event: ItemVector, topic: str, query: list[float]) -> None:
        self.produced_at[event.item_id] = time.perf_counter()
        self.producer.produce(topic, key=event.key, value=event.model_dump_json())
        self._probe(event.item_id, query, 0)

    def _probe(self, item: str, query: list[float], attempt: int) -> None:
        rid = f"{item}-{attempt}"
        self.ask(RecommendRequest(request_id=rid, user_vector=query), (item, query))

    def ask(self, request: RecommendRequest, probe: tuple[str, list[float]] | None) -> None:
        item, query = probe if probe is not None else (None, None)
        with self._lock:
            self._asked[request.request_id] = (item, query, time.perf_counter())
            self.sent += 1
        self.producer.produce(self.topic, key=request.request_id, value=request.model_dump_json())

    def collect(self) -> None:
        while not (self._done.is_set() and (not self._asked or time.perf_counter() > self._end)):
            for reply in self.replies.drain_replies(0.1):
                self._on_reply(reply)
            self.producer.poll(0)

    def _on_reply(self, reply: Reply) -> None:
        now = time.perf_counter()
        with self._lock:
            asked = self._asked.pop(reply.request_id, None)
        if asked is None:
            return  # a duplicate
        self.answered += 1
        item, query, sent = asked
        self.request_ms.append((now - sent) * 1000)
        if item is None or query is None:
            return
        if any(i.item_id == item for i in reply.items):
            self.delays[item] = (now - self.produced_at[item]) * 1000
        else:
            self.retries += 1
            self._probe(item, query, int(reply.request_id.rsplit("-", 1)[1]) + 1)

    def finish(self, collector: threading.Thread) -> None:
        self.producer.flush(30)
        self._end = time.perf_counter() + DRAIN_S
        self._done.set()
        collector.join()
        self.replies.close()


def _print_segment(s: dict[str, Any]) -> None:
    print(
        f"segment: {s['fresh']} fresh items beside {s['items']} (answer(), thread time, each "
        f"query's median of {s['repeats']}, alternating)"
    )
    u, load = s["upsert_ms"], s["load_average"]
    print(
        f"  upserts: p50 {u['p50']} p99 {u['p99']} ms each, {u['total_s']} s for all, then "
        f"{s['neighbours_found_ms_each']} ms each to find their neighbours (thread time); "
        f"load average {load['before'][0]:.1f} -> {load['after'][0]:.1f}"
    )
    for kind in ("recommend", "similar_items"):
        k = s[kind]
        print(
            f"  {kind:14s} recall@10 {k['without']['recall_at_10']} -> {k['with']['recall_at_10']}"
            f"  p50 {k['without']['p50_ms']} -> {k['with']['p50_ms']} ms"
            f"  p99 {k['without']['p99_ms']} -> {k['with']['p99_ms']} ms"
            f" (x{k['p99_with_vs_without']})"
        )


def _print_freshness(f: dict[str, Any]) -> None:
    d, r, r0 = (
        f["upsert_to_first_reply_ms"],
        f["request_to_reply_ms"],
        f["request_to_reply_without_upserts_ms"],
    )
    print(
        f"freshness: {f['upserts']} upserts at {f['upserts_per_s']}/s beside {f['rate']} req/s: "
        f"visible {f['visible']}, upsert -> first reply holding it p50 {d['p50']} p90 {d['p90']} "
        f"p99 {d['p99']} max {d['max']} ms"
    )
    print(
        f"  requests: sent {f['requests_sent']}, answered {f['requests_answered']}; "
        f"request -> reply p50/p99 {r0['p50']}/{r0['p99']} ms without upserts, "
        f"{r['p50']}/{r['p99']} ms with (p99 x{f['request_p99_with_vs_without_upserts']})"
    )
    load = f["load_average"]
    print(f"  load average {load['before'][0]:.1f} -> {load['after'][0]:.1f}")


def _plot(f: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    delays = np.sort(np.asarray(f["delays_ms"]))
    if len(delays):
        ax.plot(delays, np.arange(1, len(delays) + 1) / len(delays))
    ax.axvline(1000, color="grey", linestyle="--", label="target p99 1 s")
    ax.set_xlabel("upsert produced -> first reply holding the item (ms)")
    ax.set_ylabel("fraction of upserts")
    ax.set_title(f"{f['items']} items, {f['rate']} req/s, {f['upserts_per_s']} upserts/s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
