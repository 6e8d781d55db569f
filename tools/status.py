"""`annrec status`: the state of a deployment from Kafka and Redis alone (no extra service).

- the consumer group: state, members and the request partitions each holds (AdminClient);
- lag per partition: high watermark minus the group's committed offset;
- workers alive: their heartbeat entries in Redis (TTL'd, so a crashed worker drops out), with
  version, uptime, processed and live recall;
- index versions in storage and which one LATEST names, and the workers refusing it (why);
- dead letters in the last hour (offsets_for_times on the dead-letter topic);
- item updates published (end offsets of the compacted topic), beside what each worker has read:
  a worker behind the others still serves items the rest know are gone.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from adapters.heartbeats import read_heartbeats
from adapters.kafka_log import client_config
from adapters.redis_client import redis_refusal
from adapters.version_storage import ModelCatalog, VersionStorage, open_storage
from schemas import keys
from schemas.errors import AnnrecError
from worker.consumer import interactions_group
from worker.settings import WorkerSettings

TIMEOUT_S = 10.0
NO_OFFSET = -1001  # librdkafka's OFFSET_INVALID: nothing committed yet


def collect_status(
    settings: WorkerSettings, kafka: dict[str, str], redis_url: str, now: float | None = None
) -> dict[str, Any]:
    now = time.time() if now is None else now
    workers = _workers(redis_url, settings.group_id)  # Redis first: it fails fast and clearly
    versions = _versions(settings)
    consumer = _offsets_reader(kafka, settings.group_id)
    interactions = _offsets_reader(kafka, interactions_group(settings.group_id))
    try:
        return {
            "group": _group(kafka, settings),
            "lag": _lag(consumer, settings.topic_requests),
            "workers": workers,
            "versions": versions,
            "latest_refused": latest_refused(workers, versions["latest"]),
            "dead_letters_last_hour": _recent_count(
                consumer, settings.topic_dead_letters, now - 3600
            ),
            "item_updates": {
                "topic": settings.topic_item_updates,
                "published": _published(consumer, settings.topic_item_updates),
            },
            "interactions": {
                "topic": settings.topic_interactions,
                "group": interactions_group(settings.group_id),
                "lag": _lag(interactions, settings.topic_interactions),
            },
            "at": now,
        }
    except KafkaException as exc:
        raise AnnrecError(
            f"Kafka at {kafka.get('bootstrap.servers')} did not answer ({exc.args[0]}): check "
            f"{keys.ENV_KAFKA_BOOTSTRAP} (and {keys.ENV_PREFIX}KAFKA_CONFIG) or `annrec stack up`"
        ) from exc
    finally:
        consumer.close()
        interactions.close()


def _offsets_reader(kafka: dict[str, str], group: str) -> Consumer:
    """Never subscribes: it only reads the group's offsets, it does not join the group."""
    return Consumer({**client_config(kafka), "group.id": group, "enable.auto.commit": False})


def _group(kafka: dict[str, str], s: WorkerSettings) -> dict[str, Any]:
    admin = AdminClient(client_config(kafka))
    description = admin.describe_consumer_groups([s.group_id])[s.group_id].result(TIMEOUT_S)
    members = [
        {
            "client_id": m.client_id,
            "host": m.host,
            "partitions": sorted(
                tp.partition
                for tp in (m.assignment.topic_partitions if m.assignment else [])
                if tp.topic == s.topic_requests
            ),
        }
        for m in description.members
    ]
    return {
        "id": s.group_id,
        "state": str(description.state).split(".")[-1].lower(),
        "members": sorted(members, key=lambda m: m["client_id"]),
    }


def _partitions(consumer: Consumer, topic: str) -> list[TopicPartition]:
    meta = consumer.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
    if meta is None or meta.error is not None:
        return []
    return [TopicPartition(topic, p) for p in sorted(meta.partitions)]


def _lag(consumer: Consumer, topic: str) -> list[dict[str, int | None]]:
    parts = _partitions(consumer, topic)
    committed = consumer.committed(parts, timeout=TIMEOUT_S) if parts else []
    rows = []
    for tp in committed:
        low, high = consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S)
        done = tp.offset if tp.offset != NO_OFFSET else low
        rows.append(
            {
                "partition": tp.partition,
                "committed": tp.offset if tp.offset != NO_OFFSET else None,
                "end": high,
                "lag": max(high - done, 0),
            }
        )
    return rows


def _workers(redis_url: str, group: str) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(redis_url, socket_timeout=TIMEOUT_S)
    try:
        return read_heartbeats(client, group)
    except redis.RedisError as exc:
        raise AnnrecError(redis_refusal(redis_url, exc)) from exc
    finally:
        client.close()


def _versions(s: WorkerSettings) -> dict[str, Any]:
    try:
        catalogue = open_storage(s.storage, s.storage_options)
        models = ModelCatalog(s.storage, s.storage_options)
        return {
            "storage": s.storage,
            "versions": catalogue.versions(),
            "latest": catalogue.latest(),
            "models": {name: _model(models.model(name)) for name in models.models()},
        }
    except (OSError, AnnrecError) as exc:
        raise AnnrecError(
            f"storage {s.storage} cannot be read ({exc}): check {keys.ENV_PREFIX}STORAGE"
        ) from exc


def _model(storage: VersionStorage) -> dict[str, Any]:
    """A model in storage: its versions, LATEST, running experiment and pins."""
    experiment = storage.experiment()
    return {
        "versions": len(storage.versions()),
        "latest": storage.latest(),
        "experiment": None if experiment is None else experiment.model_dump(mode="json"),
        "pinned": storage.pins().versions,
    }


def latest_refused(workers: list[dict[str, Any]], latest: str | None) -> list[dict[str, str]]:
    """The workers refusing the version LATEST names, with their reasons (from heartbeats)."""
    return [
        {"worker_id": w["worker_id"], "serving": w["version"], "reason": w["refused"][latest]}
        for w in workers
        if latest is not None and latest in w.get("refused", {})
    ]


def _published(consumer: Consumer, topic: str) -> int:
    """Messages ever written (compaction leaves gaps in the offsets, not fewer offsets)."""
    return sum(
        consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S)[1]
        for tp in _partitions(consumer, topic)
    )


def _recent_count(consumer: Consumer, topic: str, since: float) -> int:
    parts = _partitions(consumer, topic)
    if not parts:
        return 0
    at = [TopicPartition(tp.topic, tp.partition, int(since * 1000)) for tp in parts]
    total = 0
    for tp in consumer.offsets_for_times(at, timeout=TIMEOUT_S):
        _, high = consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S)
        if tp.offset >= 0:  # -1: no message at or after `since`
            total += high - tp.offset
    return total


def render_status(doc: dict[str, Any]) -> str:
    g = doc["group"]
    lines = [f"consumer group {g['id']}: {g['state']}, {len(g['members'])} member(s)"]
    lines += [
        f"  {m['client_id']:<36} {m['host']:<18} partitions {_list(m['partitions'])}"
        for m in g["members"]
    ]
    total = sum(r["lag"] for r in doc["lag"])
    lines.append(f"lag: {total} request(s) waiting")
    lines += [
        f"  partition {r['partition']}: end {r['end']}, "
        + ("nothing committed yet" if r["committed"] is None else f"committed {r['committed']}")
        + f", lag {r['lag']}"
        for r in doc["lag"]
    ]
    lines.append(f"workers alive (heartbeat in Redis): {len(doc['workers'])}")
    for w in doc["workers"]:
        recall = ", ".join(
            f"{kind} {v['recall']:.3f} ({v['samples']})" for kind, v in w["live_recall"].items()
        )
        seen = f" (as of {doc['at'] - w['at']:.0f} s ago)" if "at" in w else ""
        lines.append(
            f"  {w['worker_id']:<36} version {w['version']}  up {w['uptime_s']:.0f} s  "
            f"processed {w['processed']}{seen}  partitions {_list(w['partitions'])}"
            + (f"  live recall {recall}" if recall else "")
            + (
                f"  item updates read {w['item_updates_read']}"
                if "item_updates_read" in w  # absent from an older worker's heartbeat
                else ""
            )
            + (f"  interactions read {w['interactions_read']}" if "interactions_read" in w else "")
        )
        lines += _model_lines(w.get("models", {}))  # absent from an older worker's heartbeat
    v = doc["versions"]
    latest = v["latest"] or "none (nothing published yet)"
    lines.append(f"versions in {v['storage']}: {len(v['versions'])}, LATEST {latest}")
    lines += [f"  {'*' if name == v['latest'] else ' '} {name}" for name in v["versions"][-5:]]
    for name, m in v.get("models", {}).items():
        arms = m["experiment"]["arms"] if m["experiment"] else []
        lines.append(
            f"  model {name}: {m['versions']} version(s), LATEST {m['latest']}"
            + (f", pinned {', '.join(m['pinned'])}" if m["pinned"] else "")
            + (
                f", experiment {m['experiment']['name']}: "
                + ", ".join(
                    f"{a['name']} {a['share'] * 100:g}% {a['version'] or 'LATEST'}" for a in arms
                )
                if arms
                else ""
            )
        )
    for r in doc.get("latest_refused", []):
        lines.append(
            f"  LATEST refused by {r['worker_id']} (still serving {r['serving']}): {r['reason']}"
        )
    lines.append(f"dead letters in the last hour: {doc['dead_letters_last_hour']}")
    u = doc.get("item_updates")
    if u is not None:
        lines.append(f"item updates published to {u['topic']}: {u['published']}")
    i = doc.get("interactions")
    if i is not None:  # worker group <group>.interactions writes them to the users' histories
        waiting = sum(r["lag"] for r in i["lag"])
        lines.append(f"interactions ({i['topic']}, group {i['group']}): {waiting} waiting")
    return "\n".join(lines)


def _model_lines(models: dict[str, Any]) -> list[str]:
    """A worker's models: LATEST, and per experiment arm its share, version and requests, so
    the two arms of a test are compared side by side."""
    lines = []
    for name, m in models.items():
        if "unavailable" in m:
            lines.append(f"    model {name}: not served: {m['unavailable']}")
            continue
        line = f"    model {name}: LATEST {m['latest']}, {m['requests']} request(s)"
        if m["experiment"]:
            arms = ", ".join(
                f"{arm} {a['share'] * 100:g}% {a['version']} {a['requests']} request(s)"
                for arm, a in m["arms"].items()
            )
            line += f"; experiment {m['experiment']}: {arms}"
        pinned = [v for v in m["held"] if v != m["latest"]]
        if pinned:
            line += f"; also held {', '.join(pinned)}"
        lines.append(line)
    return lines


def _list(values: list[int]) -> str:
    return ",".join(map(str, values)) or "-"
