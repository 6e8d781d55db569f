"""What fanning a request out to S shards and merging their answers costs in latency, simulated
from measured distributions (SCALING.md, "past one machine").

The design it prices: a catalogue cut into S shards by item, each shard a consumer group of its
own on the one requests topic (Kafka delivers every request to every group: the fan-out costs the
sender nothing), each answering top-k over its items and writing a partial reply; a merger
consuming the partial replies keyed by request_id answers when all S are in. A request's latency
is then the slowest of its S shards, plus the merger's own Kafka hop, plus the merge.

Shards are drawn independently from one measured per-shard distribution: shards that share
machines and load spikes are correlated, which makes the tail of the max smaller than this
(the max of correlated draws is closer to one draw); a slow shard machine makes it larger.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.events import Reply, ScoredItem

Floats = npt.NDArray[np.float64]
QUANTILE_POINTS = 1001  # a distribution is kept as its quantiles at 0, 0.001, ..., 1
SHARD_COUNTS = (1, 2, 4, 8, 16)


def quantiles(samples: npt.ArrayLike) -> list[float]:
    """A latency sample reduced to QUANTILE_POINTS evenly spaced quantiles (what results store)."""
    q = np.quantile(np.asarray(samples, dtype=np.float64), np.linspace(0, 1, QUANTILE_POINTS))
    return [round(float(x), 3) for x in q]


def draw(quantile_values: npt.ArrayLike, u: Floats) -> Floats:
    """The distribution given by its evenly spaced quantiles at the probabilities `u` (its
    inverse CDF, linear between the quantiles: with an even grid the neighbours of u are found
    by arithmetic, not searched for as np.interp does)."""
    values = np.asarray(quantile_values, dtype=np.float64)
    at = np.asarray(u, dtype=np.float64) * (len(values) - 1)
    low = np.minimum(at.astype(np.intp), len(values) - 2)
    return values[low] + (at - low) * (values[low + 1] - values[low])


def simulate(
    shard_ms: npt.ArrayLike,
    hop_ms: npt.ArrayLike,
    merge_ms: float,
    shards: int,
    requests: int = 200_000,
    seed: int = 0,
) -> dict[str, float]:
    """p50/p99 of max(S shard latencies) + one hop + the merge, over `requests` simulated
    requests; shard_ms and hop_ms are quantile lists (see `quantiles`). One shard: no merger.
    The slowest of S independent draws is drawn at once: the inverse CDF is increasing, so
    the max of S draws is the inverse CDF at the max of S uniforms, which is a uniform to the
    power 1/S (its CDF is u^S)."""
    rng = np.random.default_rng(seed)
    slowest = draw(shard_ms, rng.random(requests) ** (1.0 / shards))
    total = slowest if shards == 1 else slowest + draw(hop_ms, rng.random(requests)) + merge_ms
    return {
        "p50_ms": round(float(np.percentile(total, 50)), 2),
        "p99_ms": round(float(np.percentile(total, 99)), 2),
    }


def merge_replies(partials: list[str], k: int) -> list[ScoredItem]:
    """The merger's work: the S partial replies (JSON, as read from Kafka) -> the k best items.
    Shards hold disjoint items, so the best k of the union is the answer; scores are exact in
    every partial (each shard rescores from its factors), so they compare across shards."""
    items = [item for text in partials for item in Reply.model_validate_json(text).items]
    scores = np.array([-np.inf if i.score is None else i.score for i in items])
    best = np.argsort(-scores, kind="stable")[:k]
    return [items[i] for i in best.tolist()]


@functools.cache  # measured once per run: the summary's tables (sizes x kinds) share it
def merge_cost_ms(shards: int, k: int = 10, repeats: int = 300, seed: int = 0) -> float:
    """Median time of merge_replies over `shards` partial replies of k items, in ms."""
    rng = np.random.default_rng(seed)
    partials = [
        Reply(
            request_id="r",
            status="ok",
            worker_id=f"shard-{s}",
            kind="recommend",
            items=[
                ScoredItem(item_id=f"i{s}-{j}", score=float(x))
                for j, x in enumerate(np.sort(rng.random(k))[::-1])
            ],
        ).model_dump_json()
        for s in range(shards)
    ]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        merge_replies(partials, k)
        times.append((time.perf_counter() - start) * 1000)
    return round(float(np.median(times)), 4)


def fanout_table(
    shard_ms: npt.ArrayLike, hop_ms: npt.ArrayLike, seed: int = 0
) -> list[dict[str, Any]]:
    """For each shard count: the merge cost measured here and the simulated p50/p99."""
    rows = []
    for s in SHARD_COUNTS:
        merge = 0.0 if s == 1 else merge_cost_ms(s)
        rows.append(
            {"shards": s, "merge_ms": merge, **simulate(shard_ms, hop_ms, merge, s, seed=seed)}
        )
    return rows
