"""Failover as a caller sees it: request-to-reply delay around each kill, and how long each
partition went unserved after it (from the kill to the first reply to one of its requests).

Pure: the load's delivery records (partition, produce time) and the replies (`served_at`) in,
figures out. Both clocks are this machine's (the load and the workers run here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from schemas.events import Reply

# A request sent up to this long before a kill may have been in the victim's hands.
BEFORE_KILL_S = 1.0


def failover_figures(
    delivered: dict[str, tuple[int, int]],
    replies: Sequence[Reply],
    kills: Sequence[tuple[str, float]],
    end: float,
) -> dict[str, Any]:
    """delivered: request id -> (partition, produce time in ms); kills: (worker, wall time);
    end: when the load stopped. Delays are from the produce time to the first reply."""
    served: dict[str, float] = {}
    for r in replies:
        if r.request_id in delivered:
            at = r.served_at.timestamp()
            served[r.request_id] = min(at, served.get(r.request_id, at))
    sent = {rid: (p, ms / 1000) for rid, (p, ms) in delivered.items()}
    delays = [served[rid] - t for rid, (_, t) in sent.items() if rid in served]
    out: dict[str, Any] = {"delay_s": _summary(delays), "kills": []}
    bounds = [t for _, t in kills] + [end]
    for (worker, t), until in zip(kills, bounds[1:], strict=True):
        window = [
            served[rid] - at
            for rid, (_, at) in sent.items()
            if t - BEFORE_KILL_S <= at < until and rid in served
        ]
        first: dict[int, float] = {}
        for rid, at in served.items():
            p = sent[rid][0]
            if at > t and at < first.get(p, float("inf")):
                first[p] = at
        partitions = sorted({p for p, _ in sent.values()})
        out["kills"].append(
            {
                "worker": worker,
                "delay_s": _summary(window),
                "partition_unserved_s": {
                    str(p): round(first[p] - t, 2) if p in first else None for p in partitions
                },
            }
        )
    gaps = [g for k in out["kills"] for g in k["partition_unserved_s"].values() if g is not None]
    out["partition_unserved_max_s"] = round(max(gaps), 2) if gaps else None
    return out


def _summary(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    arr = np.asarray(values)
    return {
        "n": len(values),
        "p50": round(float(np.percentile(arr, 50)), 3),
        "p99": round(float(np.percentile(arr, 99)), 3),
        "max": round(float(arr.max()), 3),
    }
