"""GET /v1/status: what the explorer page shows of the serving side, from what `annrec status`
reads: the workers' heartbeats in Redis (serving version, live recall) and LATEST in storage.
Freshness is the serving version's age and whether every worker serves LATEST.

GET /v1/models: what the explorer's side-by-side comparison picks from, read from storage:
each model's LATEST, its newest versions, its running experiment's arms and its pins."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import redis

from adapters.heartbeats import read_heartbeats
from adapters.version_storage import ModelCatalog, VersionStorage

# Versions listed per model, newest first: enough to pick from; older ones can still be typed
# into a request's `version`.
LISTED_VERSIONS = 20


def serving_status(
    client: redis.Redis, group: str, storage: VersionStorage, now: float | None = None
) -> dict[str, Any]:
    """The versions being served (with their workers, age and live recall) and LATEST."""
    now = time.time() if now is None else now
    workers = read_heartbeats(client, group)
    latest = storage.latest()
    versions: dict[str, dict[str, Any]] = {}
    for w in workers:
        v = versions.setdefault(
            w["version"],
            {"version": w["version"], "workers": [], "live_recall": {}, "age_s": None},
        )
        v["workers"].append(w["worker_id"])
        created = w.get("version_created_at")
        if created:
            v["created_at"] = created
            v["age_s"] = round(now - datetime.fromisoformat(created).timestamp(), 1)
        for kind, recall in (w.get("live_recall") or {}).items():
            # Each worker samples its own answers: the one with the most samples speaks.
            if recall["samples"] > v["live_recall"].get(kind, {}).get("samples", -1):
                v["live_recall"][kind] = recall
    return {
        "group": group,
        "workers": len(workers),
        "versions": sorted(versions.values(), key=lambda v: v["version"], reverse=True),
        "latest": latest,
        "serving_latest": bool(workers) and all(w["version"] == latest for w in workers),
        "at": now,
    }


def models_status(catalog: ModelCatalog) -> dict[str, Any]:
    """Every model with its LATEST, newest versions, experiment (each arm's version: the
    control's is LATEST) and pinned versions."""
    models = []
    for name in catalog.models():
        storage = catalog.model(name)
        latest = storage.latest()
        experiment = storage.experiment()
        models.append(
            {
                "model": name,
                "latest": latest,
                "versions": sorted(storage.versions(), reverse=True)[:LISTED_VERSIONS],
                "pinned": list(storage.pins().versions),
                "experiment": None
                if experiment is None
                else {
                    "name": experiment.name,
                    "arms": [
                        {
                            "name": a.name,
                            "version": a.version or latest,
                            "control": a.version is None,
                            "share": a.share,
                        }
                        for a in experiment.arms
                    ],
                },
            }
        )
    return {"models": models}
