"""The `annrec chaos` scenarios. Each returns a dict of figures and a `passed` verdict; the CLI
prints them and writes them to JSON (RELIABILITY.md quotes them).

- crash: two workers under load, one killed (SIGKILL) and restarted every few seconds;
- swaps: versions published and announced during the load;
- bad-index: damaged versions announced while one worker serves;
- outage: Redis frozen, then the broker restarted, under load;
- fuzz: hostile events interleaved with valid ones;
- overload: one worker offered twice its capacity (tools/chaos/overload.py);
- interactions: workers killed while interaction events flow (tools/chaos/interactions.py).
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from adapters.index_files import file_entry
from adapters.kafka_log import client_config
from index_builder.announce import announce_version
from index_builder.build import build_annoy
from index_builder.publish import BuildOptions, publish_version
from index_builder.storage import adopt_version
from index_builder.synth import synth_factors
from schemas.events import DeadLetter
from schemas.layout import version_dir
from schemas.manifest import MANIFEST_NAME, Manifest
from tools.chaos.failover import failover_figures
from tools.chaos.fuzz import hostile_payloads, valid_payload
from tools.chaos.harness import (
    Cluster,
    Load,
    audit,
    recommend_payload,
    temp_folder,
    wait_until,
)
from tools.chaos.interactions import interactions
from tools.chaos.overload import overload
from tools.client import ReplyWaiter, wait_for_workers
from tools.services import Endpoints
from worker.id_rows import IdRows
from worker.settings import WorkerSettings

Figures = dict[str, Any]


def crash(
    svc: Endpoints,
    rate: int = 400,
    duration_s: float = 60,
    kill_every_s: float = 10,
    n_items: int = 20_000,
    max_delay_s: float = 10.0,
    guarantee: str = "at-least-once",
) -> Figures:
    """Two workers on the default settings, one killed with SIGKILL every kill_every_s and
    restarted at once; passes when nothing is lost and no request waited over max_delay_s
    for its reply. Failover figures: tools/chaos/failover.py.

    guarantee exactly-once: the workers run ANNREC_PROCESSING_GUARANTEE=exactly-once and the
    audit reads the topics as a read_committed consumer, which must see no duplicate."""
    cluster = Cluster.create(svc, n_items)
    exactly_once = guarantee == "exactly-once"
    cluster.extra_env["ANNREC_PROCESSING_GUARANTEE"] = guarantee
    for name in ("w1", "w2"):
        cluster.start(name)
    _warm_up(cluster, 2)
    load = Load(
        svc.kafka, cluster.topics.topic_requests, rate, duration_s, _payload(cluster), "crash"
    ).start()
    kills: list[dict[str, Any]] = []
    killed_at: list[tuple[str, float]] = []
    started = time.monotonic()
    victim = "w1"
    while (elapsed := time.monotonic() - started) < duration_s - 1:
        time.sleep(min(kill_every_s, max(0.0, duration_s - elapsed)))
        if time.monotonic() - started >= duration_s:
            break
        cluster.kill(victim)
        killed_at.append((victim, time.time()))
        cluster.start(victim)  # restarted at once: it rejoins and takes partitions back
        kills.append({"at_s": round(time.monotonic() - started, 1), "worker": victim})
        victim = "w2" if victim == "w1" else "w1"
    sent = load.join()
    load_end = time.time()
    result, replies, _ = audit(
        svc.kafka, svc.redis_url, cluster.topics, sent, wait_s=120, read_committed=exactly_once
    )
    exits = cluster.stop_all()
    failover = failover_figures(load.delivered, replies, killed_at, load_end)
    slowest = failover["delay_s"]["max"]
    return {
        "scenario": "crash",
        "params": {
            "rate": rate,
            "duration_s": duration_s,
            "kill_every_s": kill_every_s,
            "n_items": n_items,
            "workers": 2,
            "max_delay_s": max_delay_s,
            "guarantee": guarantee,
            "settings": _failover_settings(cluster),
        },
        "kills": len(kills),
        "kill_times": kills,
        "audit": result.as_dict(),
        "failover": failover,
        "duplicates_identical": _duplicates_identical(replies),
        "worker_exit_codes": exits,
        "passed": result.lost == 0
        and result.sent == int(rate * duration_s)
        and _duplicates_identical(replies)
        and slowest is not None
        and slowest <= max_delay_s
        and (result.duplicates == 0 or not exactly_once),
    }


def _failover_settings(cluster: Cluster) -> dict[str, Any]:
    """The group settings the workers ran with (the defaults unless the environment says)."""
    s = WorkerSettings()
    env = cluster.env("w1")
    return {
        "session_timeout_ms": int(env.get("ANNREC_SESSION_TIMEOUT_MS", s.session_timeout_ms)),
        "heartbeat_interval_ms": int(
            env.get("ANNREC_HEARTBEAT_INTERVAL_MS", s.heartbeat_interval_ms)
        ),
        "instance_id": "ANNREC_INSTANCE_ID" in env,
        "consumer_config": env.get("ANNREC_CONSUMER_CONFIG", "{}"),
    }


def swaps(
    svc: Endpoints,
    rate: int = 200,
    duration_s: float = 40,
    n_versions: int = 10,
    n_items: int = 5000,
) -> Figures:
    cluster = Cluster.create(svc, n_items)
    side = temp_folder("annrec-chaos-next-")
    # Built before the load (not measured: the build would compete for the same cores).
    upcoming = [
        publish_version(
            synth_factors(n_items, len(cluster.factors.user_ids), 32, seed=100 + i),
            side,
            BuildOptions(n_trees=10, quality_queries=100),
        ).version
        for i in range(n_versions)
    ]
    cluster.start("w1")
    _warm_up(cluster, 1)
    first = _latest_manifest(cluster.storage)
    load = Load(
        svc.kafka, cluster.topics.topic_requests, rate, duration_s, _payload(cluster), "swap"
    ).start()
    for version in upcoming:
        time.sleep(duration_s / (n_versions + 1))
        _move_in(side, cluster, version)
    sent = load.join()
    result, replies, _ = audit(svc.kafka, svc.redis_url, cluster.topics, sent, wait_s=90)
    cluster.stop_all()
    published = {first.version, *upcoming}
    named = {r.index_version for r in replies if r.request_id in set(sent)}
    mixed = _replies_not_from_their_version(cluster.storage, replies, set(sent))
    return {
        "scenario": "swaps",
        "params": {
            "rate": rate,
            "duration_s": duration_s,
            "versions": n_versions,
            "n_items": n_items,
        },
        "audit": result.as_dict(),
        "versions_served": len(named),
        "replies_naming_unpublished_versions": len(named - published),
        "replies_not_matching_their_version": mixed,
        "failed": sum(n for s, n in result.statuses.items() if s != "ok"),
        "passed": result.lost == 0
        and not named - published
        and mixed == 0
        and set(result.statuses) == {"ok"},
    }


def bad_index(svc: Endpoints, n_items: int = 3000) -> Figures:
    cluster = Cluster.create(svc, n_items)
    cluster.start("w1")
    _warm_up(cluster, 1)
    good = _latest_manifest(cluster.storage).version
    port = _metrics_port(cluster, "w1")
    side = temp_folder("annrec-chaos-bad-")
    cases: list[dict[str, Any]] = []
    for i, (name, damage) in enumerate(DAMAGES.items()):
        factors = synth_factors(n_items, len(cluster.factors.user_ids), 32, seed=200 + i)
        version = publish_version(factors, side, BuildOptions(n_trees=5, quality=False)).version
        damage(version_dir(side, version))
        before = _refusals(port)
        _move_in(side, cluster, version)
        # mypy infers no type for a lambda with a default (the default binds this iteration's value)
        refused = wait_until(lambda b=before: _refusals(port) > b, timeout_s=30)  # type: ignore[misc]
        replies = _ask(cluster, 20, f"bad-{name}")
        cases.append(
            {
                "damage": name,
                "refused": refused,
                "refusal_logged": any(
                    version in line["line"] for line in cluster.log_lines("index_refused")
                ),
                "answered": len(replies),
                "served_by_previous": all(r.index_version == good for r in replies.values()),
            }
        )
    # Then a good version: the worker moves on from the refused ones.
    fixed = publish_version(
        synth_factors(n_items, len(cluster.factors.user_ids), 32, seed=299),
        side,
        BuildOptions(n_trees=5, quality=False),
    ).version
    _move_in(side, cluster, fixed)
    refusals = _refusals(port)
    moved_on = wait_until(
        lambda: all(
            r.index_version == fixed for r in _ask(cluster, 4, f"fixed-{time.monotonic()}").values()
        ),
        30,
        1.0,
    )
    cluster.stop_all()
    return {
        "scenario": "bad-index",
        "cases": cases,
        "refusals_metric": refusals,
        "next_good_version_served": moved_on,
        "passed": moved_on
        and refusals >= len(cases)
        and all(
            c["refused"] and c["refusal_logged"] and c["answered"] == 20 and c["served_by_previous"]
            for c in cases
        ),
    }


def outage(
    svc: Endpoints, rate: int = 200, redis_down_s: float = 10, n_items: int = 5000
) -> Figures:
    if svc.stack is None:
        return {
            "scenario": "outage",
            "skipped": "needs the local stack (it stops its processes)",
            "passed": True,
        }
    cluster = Cluster.create(svc, n_items)
    cluster.start("w1")
    _warm_up(cluster, 1)
    duration_s = 3 * redis_down_s + 20
    load = Load(
        svc.kafka, cluster.topics.topic_requests, rate, duration_s, _payload(cluster), "outage"
    ).start()
    time.sleep(redis_down_s)
    svc.stack.pause_redis(redis_down_s)
    time.sleep(5)
    restart_started = time.monotonic()
    svc.stack.restart_kafka()
    broker_down_s = time.monotonic() - restart_started
    sent = load.join()
    result, _, _ = audit(svc.kafka, svc.redis_url, cluster.topics, sent, wait_s=120)
    crashed = cluster.crashed()
    cluster.stop_all()
    return {
        "scenario": "outage",
        "params": {
            "rate": rate,
            "duration_s": duration_s,
            "redis_down_s": redis_down_s,
            "n_items": n_items,
        },
        "broker_restart_s": round(broker_down_s, 1),
        "audit": result.as_dict(),
        "worker_crashed": crashed,
        "write_failures_logged": len(cluster.log_lines("batch_not_written")),
        "passed": result.lost == 0 and not crashed and result.sent == int(rate * duration_s),
    }


def fuzz(svc: Endpoints, n_hostile: int = 10_000, seed: int = 0, n_items: int = 3000) -> Figures:
    cluster = Cluster.create(svc, n_items)
    cluster.start("w1")
    _warm_up(cluster, 1)
    _allow_large_messages(svc.kafka, cluster.topics.topic_requests)
    hostile = hostile_payloads(seed, n_hostile)
    valid_ids, delivered, refused_by_kafka = _produce_interleaved(cluster, hostile)
    result, replies, dead = audit(svc.kafka, svc.redis_url, cluster.topics, valid_ids, wait_s=180)
    # Every hostile event with a top-level request_id (all but these kinds) gets an error reply.
    taken = set(delivered)
    readable = {rid for kind, rid, _ in hostile if kind not in UNREADABLE_KINDS and rid in taken}
    errored = {r.request_id for r in replies if r.status == "error"}
    crashed = cluster.crashed()
    cluster.stop_all()
    dead_ids = {(d.source_partition, d.source_offset) for d in dead}
    return {
        "scenario": "fuzz",
        "params": {"hostile": n_hostile, "valid": len(valid_ids), "seed": seed},
        "hostile_produced": len(delivered),
        "hostile_refused_by_kafka": len(refused_by_kafka),
        "dead_letters": len(dead),
        "dead_letters_without_reason": sum(1 for d in dead if not d.reason),
        "reasons": _top_reasons(dead),
        "readable_ids": len(readable),
        "readable_ids_without_error_reply": len(readable - errored),
        "valid_answered": result.replied,
        "valid_lost": result.lost,
        "worker_crashed": crashed,
        "passed": not crashed
        and result.lost == 0
        and len(dead) == len(delivered)
        and len(dead_ids) == len(dead)
        and not readable - errored,
    }


# Hostile kinds without a readable top-level request_id (tools/chaos/fuzz.py).
UNREADABLE_KINDS = frozenset({"random_bytes", "not_json", "oversized"})


def _produce_interleaved(
    cluster: Cluster, hostile: list[tuple[str, str, bytes]]
) -> tuple[list[str], list[str], list[str]]:
    """Each hostile event followed by a valid one; returns the valid ids, the hostile events the
    broker took and those it refused itself."""
    from confluent_kafka import Producer

    # Oversized payloads go through only if the topic and producer allow them (Kafka's default
    # limit is 1 MiB); the worker's own limit is tested with them either way.
    producer = Producer(
        {**client_config(cluster.svc.kafka), "linger.ms": 5, "message.max.bytes": 4 << 20}
    )
    topic, n_users = cluster.topics.topic_requests, len(cluster.factors.user_ids)
    valid_ids: list[str] = []
    delivered: list[str] = []
    refused_by_kafka: list[str] = []

    def on_delivery(err: object, msg: Any) -> None:
        (refused_by_kafka if err is not None else delivered).append(msg.key().decode())

    for i, (_, rid, payload) in enumerate(hostile):
        try:
            producer.produce(topic, key=rid.encode(), value=payload, on_delivery=on_delivery)
        except Exception:
            refused_by_kafka.append(rid)
        vid = f"valid-{i}"
        producer.produce(topic, key=vid.encode(), value=valid_payload(vid, n_users, i))
        valid_ids.append(vid)
        producer.poll(0)
    producer.flush(60)
    return valid_ids, delivered, refused_by_kafka


def _top_reasons(dead: list[DeadLetter]) -> dict[str, int]:
    """The ten commonest kinds of dead-letter reason, with their counts."""
    reasons: dict[str, int] = defaultdict(int)
    for d in dead:
        # "invalid request: k: ..." -> "invalid request: k"; ids and values quoted in a reason
        # are elided so that reasons group by kind.
        kind = re.sub(r"'[^']*'", "'...'", d.reason)
        reasons[":".join(kind.split(":")[:2]).strip()] += 1
    return dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:10])


def _allow_large_messages(kafka: dict[str, str], topic: str, limit: int = 4 << 20) -> None:
    """Let oversized payloads reach the worker (Kafka's own 1 MiB limit would refuse them
    first): the worker's limit is what this scenario tests."""
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    entry = ConfigEntry(
        "max.message.bytes", str(limit), incremental_operation=AlterConfigOpType.SET
    )
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    admin = AdminClient(client_config(kafka))  # kept alive until the futures resolve
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


SCENARIOS: dict[str, Callable[..., Figures]] = {
    "crash": crash,
    "swaps": swaps,
    "bad-index": bad_index,
    "outage": outage,
    "fuzz": fuzz,
    "overload": overload,
    "interactions": interactions,
}


# --- damaged versions (bad-index) -------------------------------------------------------------


def _flip_byte(d: Path) -> None:
    path = d / "items.angular.ann"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(d: Path) -> None:
    path = d / "items.mips.band00.ann"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _half_copied(d: Path) -> None:
    (d / "item_factors.npy").unlink()


def _wrong_dimension(d: Path) -> None:
    """An index of another dimension, with the manifest's checksums made to match: only the
    vectors inside can give it away."""
    path = d / "items.angular.ann"
    manifest = json.loads((d / MANIFEST_NAME).read_text())
    n = manifest["n_items"]
    path.unlink()
    build_annoy(
        np.random.default_rng(0).standard_normal((n, 16)).astype(np.float32),
        path,
        metric="angular",
        n_trees=2,
        seed=1,
    )
    manifest["files"][path.name] = file_entry(path).model_dump()
    (d / MANIFEST_NAME).write_text(json.dumps(manifest))


DAMAGES = {
    "corrupted": _flip_byte,
    "truncated": _truncate,
    "half-copied": _half_copied,
    "wrong-dimension": _wrong_dimension,
}


# --- helpers -------------------------------------------------------------------------------------


def _payload(cluster: Cluster):  # noqa: ANN202 - a closure from harness
    return recommend_payload(len(cluster.factors.user_ids))


def _warm_up(cluster: Cluster, workers: int) -> None:
    t = cluster.topics
    wait_for_workers(
        cluster.svc.kafka, t.topic_requests, t.topic_replies, len(cluster.factors.user_ids), workers
    )


def _ask(cluster: Cluster, n: int, prefix: str) -> dict[str, Any]:
    waiter = ReplyWaiter(cluster.svc.kafka, cluster.topics.topic_replies)
    from confluent_kafka import Producer

    producer = Producer(client_config(cluster.svc.kafka))
    ids = {f"{prefix}-{i}" for i in range(n)}
    for i, rid in enumerate(sorted(ids)):
        producer.produce(
            cluster.topics.topic_requests,
            key=rid.encode(),
            value=valid_payload(rid, len(cluster.factors.user_ids), i),
        )
    producer.flush(10)
    try:
        return waiter.wait(ids, timeout_s=30)
    finally:
        waiter.close()


def _latest_manifest(storage: Path) -> Manifest:
    latest = (storage / "LATEST").read_text().strip()
    return Manifest.model_validate_json((version_dir(storage, latest) / MANIFEST_NAME).read_text())


def _move_in(side: Path, cluster: Cluster, version: str) -> None:
    """What a publish does, from a prebuilt version: into versions/, LATEST, announce."""
    manifest = adopt_version(cluster.storage, side, version)
    announce_version(cluster.svc.kafka, cluster.topics.topic_index_versions, manifest)


def _metrics_port(cluster: Cluster, name: str) -> int:
    for line in cluster.log_lines("worker_started"):
        if line["worker"] == name and (m := re.search(r"metrics_port=(\d+)", line["line"])):
            return int(m.group(1))
    raise RuntimeError(f"{name} logged no metrics port")


def _refusals(port: int) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = re.search(r"^annrec_index_refusals_total (\S+)$", body, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def _duplicates_identical(replies: list[Any]) -> bool:
    """Duplicates are harmless when every copy says the same: same version, same items."""
    seen: dict[str, tuple[str, str]] = {}
    for r in replies:
        content = (r.index_version, json.dumps([i.model_dump() for i in r.items]))
        if seen.setdefault(r.request_id, content) != content:
            return False
    return True


def _replies_not_from_their_version(storage: Path, replies: list[Any], wanted: set[str]) -> int:
    """Replies whose scores are not those of the version they name: every score must equal the
    item's factors . the user's factors *in that version* (the versions' factors all differ)."""
    by_version = defaultdict(list)
    for r in replies:
        if r.request_id in wanted and r.status == "ok":
            by_version[r.index_version].append(r)
    bad = 0
    for version, group in by_version.items():
        d = version_dir(storage, version)
        items = np.load(d / "item_factors.npy", mmap_mode="r")
        users = np.load(d / "user_factors.npy", mmap_mode="r")
        item_rows = IdRows(np.load(d / "item_ids.npy"))
        user_rows = IdRows(np.load(d / "user_ids.npy"))
        for r in group:
            user = users[user_rows[r.subject_id]]
            for item in r.items:
                if item.score is None or abs(
                    float(items[item_rows[item.item_id]] @ user) - item.score
                ) > 1e-3 * max(1.0, abs(item.score)):
                    bad += 1
                    break
    return bad
