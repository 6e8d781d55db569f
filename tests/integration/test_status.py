"""`annrec status` against real Kafka and Redis: two workers listed with their partitions, and a
third that crashed (SIGKILL: no goodbye) drops out when its heartbeat expires; a damaged version
LATEST names is shown refused by the workers, with the reason."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from adapters.interactions import publish_interactions
from adapters.item_updates import publish_item_updates
from index_builder.publish import BuildOptions, publish_version
from index_builder.storage import set_latest
from schemas.events import Interaction, ItemUpdate, RecommendRequest
from schemas.layout import version_dir
from schemas.manifest import MANIFEST_NAME
from schemas.settings import topic_env
from tests.cli import annrec
from tests.integration.helpers import produce, running_worker
from tools.client import ReplyWaiter, send_requests
from tools.status import render_status


def _status(settings, services):
    env = {
        "ANNREC_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "ANNREC_REDIS_URL": services.redis_url,
        "ANNREC_STORAGE": settings.storage,
        "ANNREC_GROUP_ID": settings.group_id,
        **topic_env(settings),
    }
    result = annrec("status", "--json", extra_env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def _wait_for(check, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError("condition not met in time")


def test_status_lists_live_workers_and_drops_a_crashed_one(
    settings, kafka_conf, services, small_factors, tmp_path
):
    manifest = publish_version(
        small_factors, Path(settings.storage), BuildOptions(n_trees=5, quality=False)
    )
    fast = {"heartbeat_ttl_s": 3, "session_timeout_ms": 6000}
    w1 = settings.model_copy(update={**fast, "worker_id": f"{settings.worker_id}-a"})
    w2 = settings.model_copy(update={**fast, "worker_id": f"{settings.worker_id}-b"})
    crashing_id = f"{settings.worker_id}-c"
    env = {
        **os.environ,
        "ANNREC_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "ANNREC_REDIS_URL": services.redis_url,
        "ANNREC_STORAGE": settings.storage,
        "ANNREC_GROUP_ID": settings.group_id,
        "ANNREC_WORKER_ID": crashing_id,
        **topic_env(settings),
        "ANNREC_METRICS_PORT": "-1",
        "ANNREC_HEARTBEAT_TTL_S": "3",
        "ANNREC_SESSION_TIMEOUT_MS": "6000",
    }
    with (
        running_worker(w1, kafka_conf, services.redis_url),
        running_worker(w2, kafka_conf, services.redis_url),
    ):
        crashing = subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            waiter = ReplyWaiter(kafka_conf, settings.topic_replies)
            requests = [RecommendRequest(request_id=f"st-{u}", user_id=f"u{u}") for u in range(8)]
            send_requests(kafka_conf, settings.topic_requests, requests)
            assert len(waiter.wait({r.request_id for r in requests}, timeout_s=60)) == 8
            waiter.close()

            def three_settled():
                doc = _status(settings, services)
                ids = {w["worker_id"] for w in doc["workers"]}
                members = doc["group"]["members"]
                assigned = sorted(p for m in members for p in m["partitions"])
                settled = doc["group"]["state"] == "stable" and len(members) == 3
                return doc if settled and len(ids) == 3 and assigned == [0, 1, 2, 3] else None

            doc = _wait_for(three_settled)
            assert {w["worker_id"] for w in doc["workers"]} == {
                w1.worker_id,
                w2.worker_id,
                crashing_id,
            }
            for w in doc["workers"]:
                assert w["version"] == manifest.version and w["uptime_s"] >= 0
            assert doc["versions"]["latest"] == manifest.version
            # offsets are committed about once a second after the replies are written
            _wait_for(lambda: sum(r["lag"] for r in _status(settings, services)["lag"]) == 0)
            by_client = {m["client_id"]: m["partitions"] for m in doc["group"]["members"]}
            assert set(by_client) == {w1.worker_id, w2.worker_id, crashing_id}
        finally:
            crashing.send_signal(signal.SIGKILL)
            crashing.wait(10)
        killed_at = time.monotonic()

        def crashed_gone():
            doc = _status(settings, services)
            ids = {w["worker_id"] for w in doc["workers"]}
            return doc if ids == {w1.worker_id, w2.worker_id} else None

        doc = _wait_for(crashed_gone, timeout_s=30)
        assert time.monotonic() - killed_at <= 3 + 5  # its heartbeat TTL, plus polling slack
        assert doc["dead_letters_last_hour"] == 0
        produce(kafka_conf, settings.topic_requests, [b"not a request"])
        _wait_for(lambda: _status(settings, services)["dead_letters_last_hour"] == 1)

        # Item updates: published on the topic, and read by every live worker (between batches,
        # so a request nudges each one).
        updates = [ItemUpdate(item_id=f"i{n}", value=False) for n in (1, 2)]
        publish_item_updates(kafka_conf, settings.topic_item_updates, updates)

        def updates_read():
            more = [RecommendRequest(request_id=f"st2-{u}", user_id=f"u{u}") for u in range(8)]
            send_requests(kafka_conf, settings.topic_requests, more)
            doc = _status(settings, services)
            read = [w.get("item_updates_read") for w in doc["workers"]]
            return doc if read == [2, 2] else None

        doc = _wait_for(updates_read)
        assert doc["item_updates"] == {"topic": settings.topic_item_updates, "published": 2}

        # Interactions: consumed by the workers' interactions group; status shows its lag.
        events = [
            Interaction(user_id=f"u{n}", item_id="i3", timestamp=datetime.now(UTC))
            for n in range(6)
        ]
        publish_interactions(kafka_conf, settings.topic_interactions, events)

        def interactions_read():
            doc = _status(settings, services)
            read = sum(w.get("interactions_read", 0) for w in doc["workers"])
            lag = sum(r["lag"] for r in doc["interactions"]["lag"])
            return doc if read == 6 and lag == 0 else None

        doc = _wait_for(interactions_read)
        assert doc["interactions"]["topic"] == settings.topic_interactions
        assert sum(r["end"] for r in doc["interactions"]["lag"]) == 6

        # A damaged version LATEST names (moved there by hand: `annrec versions rollback` would
        # refuse it): both workers refuse it and keep serving, and status says so with the reason.
        damaged = _damaged_copy(Path(settings.storage), manifest.version)
        assert set_latest(Path(settings.storage), damaged)

        def refused():
            doc = _status(settings, services)
            return doc if len(doc["latest_refused"]) == 2 else None

        doc = _wait_for(refused, timeout_s=30)
        assert doc["versions"]["latest"] == damaged
        for r in doc["latest_refused"]:
            assert r["serving"] == manifest.version
            assert "item_factors.npy does not match its sha256" in r["reason"]
        assert f"LATEST refused by {w1.worker_id} (still serving" in render_status(doc)


def _damaged_copy(storage: Path, version: str) -> str:
    """A copy of `version` under a newer name with one byte of its item factors altered."""
    name = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ") + "-dddddd"
    target = version_dir(storage, name)
    shutil.copytree(version_dir(storage, version), target)
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    (target / MANIFEST_NAME).write_text(json.dumps({**manifest, "version": name}))
    factors = target / "item_factors.npy"
    data = bytearray(factors.read_bytes())
    data[-1] ^= 0xFF
    factors.write_bytes(bytes(data))
    return name
