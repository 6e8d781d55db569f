"""The `max_per` and `explain` rows of `annrec bench filters` (query_engine/diversity.py,
query_engine/banded_max_per.py, query_engine.vectors.explain_scores).

max_per: for each attribute and n = 1..3, every query runs five ways, interleaved in a random
order: the search as served (VersionSearch.*_max_per, the constraint looked up as a request
does) and the same search without max_per (VersionSearch.recommend / similar_items); the whole
request with and without max_per through the worker's answer path (worker.answer.answer, by
`user_vector` or `item_id`, and the reply's JSON encoding: what a worker computes per request,
the p99 the target holds it to); and the exact constrained top-10 (every item scored, walked
greedily in score order, one item at a time: the reference, independent of diversity.py).
item -> items runs without the version's neighbour table (query_engine/neighbours.py), both ways:
max_per is answered by the index path the table falls back to, compared with the same path.
Attributes: `brand` (200 values, independent of the factors), `category` (20, Zipf-sized) and
`maker` (100 values following the factors: the nearest of 100 random directions, so a user's
top items crowd into a few makers, the wall max_per is for).

explain: `recommend` with the same 10 recent items through the worker's answer path and the
reply's JSON encoding, with and without `explain`, interleaved; and how far each explained
item's contributions (all of them) sum from its score.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from index_builder.attributes import AttributeTable, Column
from query_engine.confidence import fold_in_confidences
from query_engine.diversity import max_per_of
from query_engine.vectors import cosine_scores, explain_scores, recall_at_k, unit_rows
from schemas.events import MaxPer, RecommendRequest, SimilarItemsRequest
from worker.answer import answer
from worker.index_store import LoadedVersion

K = 10
MAX_PER_ATTRS = ("brand", "category", "maker")
MAX_PER_NS = (1, 2, 3)
MAKERS = 100
RECENT_ITEMS = 10
Rows = npt.NDArray[np.int64]
Scores = npt.NDArray[np.float32]


def with_maker(table: AttributeTable, item_factors: npt.NDArray[np.float32], seed: int) -> None:
    """Add the `maker` column: each item's nearest of MAKERS random directions."""
    directions = np.random.default_rng(seed + 7).standard_normal((item_factors.shape[1], MAKERS))
    codes = np.empty(len(item_factors), dtype=np.int32)
    for start in range(0, len(item_factors), 100_000):  # bounded memory at 1M
        block = unit_rows(item_factors[start : start + 100_000]) @ directions
        codes[start : start + len(block)] = block.argmax(axis=1)
    table.columns.append(Column("maker", "category", codes, [f"m{i:03d}" for i in range(MAKERS)]))


def _greedy(scores: Scores, codes: npt.NDArray[np.int32], n: int, k: int) -> list[int]:
    """The exact constrained top-k, one item at a time down the full score order."""
    taken: list[int] = []
    counts: dict[int, int] = {}
    depth = 4096
    while True:
        depth = min(depth, len(scores))
        head = np.argpartition(-scores, depth - 1)[:depth] if depth < len(scores) else None
        order = np.arange(len(scores)) if head is None else head
        order = order[np.lexsort((order, -scores[order]))]
        taken, counts = [], {}
        for row in order.tolist():
            c = int(codes[row])
            if c >= 0 and counts.get(c, 0) >= n:
                continue
            counts[c] = counts.get(c, 0) + 1
            taken.append(row)
            if len(taken) == k:
                return taken
        if depth == len(scores):
            return taken
        depth *= 8


def max_per_rows(
    v: LoadedVersion,
    users: npt.NDArray[np.float32],
    item_rows: npt.NDArray[np.int64],
) -> list[dict[str, Any]]:
    attrs = v.attributes
    assert attrs is not None
    out = []
    for task in ("recommend", "similar_items"):
        n_queries = len(users) if task == "recommend" else len(item_rows)
        if task == "similar_items":
            v = without_table(v)
        for attr in MAX_PER_ATTRS:
            codes = attrs.value_codes(attr)
            for n in MAX_PER_NS:
                found: dict[str, list[Rows]] = {name: [] for name in (*TIMED, "exact")}
                seconds: dict[str, list[float]] = {name: [] for name in TIMED}
                cpu: dict[str, list[float]] = {name: [] for name in TIMED}
                for q in range(n_queries):
                    subject = users[q] if task == "recommend" else int(item_rows[q])
                    runs, scores = _runners(v, task, subject, attr, n)
                    for name in np.random.default_rng(q).permutation(TIMED).tolist():
                        start, start_cpu = time.perf_counter(), time.thread_time()
                        found[name].append(runs[name]())
                        cpu[name].append(time.thread_time() - start_cpu)
                        seconds[name].append(time.perf_counter() - start)
                    found["exact"].append(np.asarray(_greedy(scores, codes, n, K)))
                out.append(_row(task, attr, n, found, seconds, cpu))
    return out


def without_table(v: LoadedVersion) -> LoadedVersion:
    """The version serving item -> items without its neighbour table: max_per is answered by
    the angular index (or the exact path) it falls back to, and is compared with the same
    request on that path, not with a table lookup."""
    plan = v.search.plan
    unindexed = replace(plan, similar=replace(plan.similar, table=False))
    return replace(v, search=v.search.with_plan(unindexed))


# The timed ways of a max_per row: the search served and without max_per, the request served
# and without max_per.
TIMED = ("served", "plain", "request", "plain_request")


def _runners(
    v: LoadedVersion, task: str, subject: Scores | int, attr: str, n: int
) -> tuple[dict[str, Callable[[], Rows]], Scores]:
    """(the timed ways of one subject, every item's exact score)."""
    attrs = v.attributes
    constraint = MaxPer(attr=attr, n=n)
    requests: dict[str, RecommendRequest | SimilarItemsRequest]
    if isinstance(subject, int):
        row = subject
        scores = cosine_scores(np.asarray(v.item_factors), v.search.item_norms, v.item_factors[row])
        scores[row] = -np.inf

        def served() -> Rows:
            return v.search.similar_items_max_per(row, K, max_per_of(attrs, attr, n))[0]

        def plain() -> Rows:
            return v.search.similar_items(row, K)[0]

        item_id = str(v.item_ids[row])
        requests = {
            name: SimilarItemsRequest(request_id=name, item_id=item_id, k=K, max_per=mp)
            for name, mp in (("request", constraint), ("plain_request", None))
        }
    else:
        query = subject
        scores = (np.asarray(v.item_factors) @ query).astype(np.float32)

        def served() -> Rows:
            return v.search.recommend_max_per(query, K, max_per_of(attrs, attr, n))[0]

        def plain() -> Rows:
            return v.search.recommend(query, K)[0]

        vector = query.tolist()
        requests = {
            name: RecommendRequest(request_id=name, user_vector=vector, k=K, max_per=mp)
            for name, mp in (("request", constraint), ("plain_request", None))
        }

    def through_worker(request: RecommendRequest | SimilarItemsRequest) -> Callable[[], Rows]:
        def run() -> Rows:
            reply = answer(request, v, "bench")
            reply.model_dump_json()  # what the sinks write
            return v.item_rows.rows([i.item_id for i in reply.items])[0]

        return run

    runs = {"served": served, "plain": plain}
    runs.update({name: through_worker(r) for name, r in requests.items()})
    return runs, scores


def _row(
    task: str,
    attr: str,
    n: int,
    found: dict[str, list[Rows]],
    seconds: dict[str, list[float]],
    cpu: dict[str, list[float]],
) -> dict[str, Any]:
    truth = found["exact"]
    results = [len(f) for f in found["request"]]
    possible = [len(t) for t in truth]
    # How much the constraint changes the answer: the unconstrained top-10's share of the
    # constrained one (1.0: max_per changed nothing).
    overlap = [recall_at_k(p, t) for p, t in zip(found["plain"], truth, strict=True)]

    def recall(name: str) -> float:
        return float(np.mean([recall_at_k(f, t) for f, t in zip(found[name], truth, strict=True)]))

    row: dict[str, Any] = {
        "task": task,
        "attr": attr,
        "n": n,
        "queries": len(truth),
        "recall_at_10": recall("served"),
        "request_recall_at_10": recall("request"),
        "unconstrained_overlap": float(np.mean(overlap)),
        "mean_results": float(np.mean(results)),
        "short_answers": int(sum(r < p for r, p in zip(results, possible, strict=True))),
    }
    # Wall time, and the thread's CPU time: on a shared machine a wall-clock p99 of 200 queries
    # is mostly the scheduler (a 0.1 ms search measured at 5 ms); CPU time is what the query
    # itself costs.
    ways = (("", "served", "plain"), ("request_", "request", "plain_request"))
    for clock, times in (("", seconds), ("cpu_", cpu)):
        ms = {name: np.array(times[name]) * 1000 for name in TIMED}
        for way, served, plain in ways:
            for q in (50, 99):
                row[f"{way}{clock}p{q}_ms"] = float(np.percentile(ms[served], q))
                row[f"{way}{clock}plain_p{q}_ms"] = float(np.percentile(ms[plain], q))
                row[f"{way}{clock}p{q}_ratio"] = (
                    row[f"{way}{clock}p{q}_ms"] / row[f"{way}{clock}plain_p{q}_ms"]
                )
    return row


def explain_row(v: LoadedVersion, n_queries: int, seed: int = 0) -> dict[str, Any]:
    """recommend from RECENT_ITEMS random items, plain vs explain, through worker.answer."""
    rng = np.random.default_rng(seed + 11)
    n_items = v.manifest.n_items
    seconds: dict[str, list[float]] = {"plain": [], "explain": []}
    cpu: dict[str, list[float]] = {"plain": [], "explain": []}
    errors: list[float] = []
    f = v.manifest.fold_in
    for q in range(n_queries):
        recent = rng.choice(n_items, RECENT_ITEMS, replace=False)
        ids = [str(v.item_ids[r]) for r in recent]
        requests = {
            name: RecommendRequest(request_id=f"{name}{q}", recent_items=ids, k=K, explain=flag)
            for name, flag in (("plain", False), ("explain", True))
        }
        for name in rng.permutation(list(requests)).tolist():
            start, start_cpu = time.perf_counter(), time.thread_time()
            reply = answer(requests[name], v, "bench")
            reply.model_dump_json()  # what the sinks write: an explained reply is 3x longer
            cpu[name].append(time.thread_time() - start_cpu)
            seconds[name].append(time.perf_counter() - start)
        rows = v.item_rows.rows([i.item_id for i in reply.items])[0]
        seen, confidence = fold_in_confidences(v.fold_in, recent)  # the version's weighting
        terms = explain_scores(
            v.gramian, v.item_factors[seen], v.item_factors[rows], f.regularization, confidence
        )
        served = np.array([i.score for i in reply.items], dtype=np.float64)
        errors += (np.abs(terms.sum(axis=1) - served) / np.abs(served)).tolist()
    row: dict[str, Any] = {"queries": n_queries, "recent_items": RECENT_ITEMS}
    for clock, times in (("", seconds), ("cpu_", cpu)):
        plain, explained = (np.array(times[s]) * 1000 for s in ("plain", "explain"))
        row[f"{clock}plain_mean_ms"] = float(plain.mean())
        row[f"{clock}explain_mean_ms"] = float(explained.mean())
        row[f"{clock}mean_ratio"] = float(explained.mean() / plain.mean())
        for q in (50, 99):
            row[f"{clock}plain_p{q}_ms"] = float(np.percentile(plain, q))
            row[f"{clock}explain_p{q}_ms"] = float(np.percentile(explained, q))
            row[f"{clock}p{q}_ratio"] = float(np.percentile(explained, q) / np.percentile(plain, q))
    row["max_relative_sum_error"] = float(max(errors))
    return row


def markdown(result: dict[str, Any]) -> list[str]:
    lines = [
        "**max_per** (k=10; recall against the exact constrained top-10; p50 / p99 ms of the "
        "search, then of the request through the worker's answer path, each against the same "
        "without max_per; CPU: the thread's CPU time, which the machine's other load does not "
        "inflate)",
        "",
        "| task | attribute | n | recall@10 | overlap | results | short "
        "| search p50 / p99 ms (without) | p99 ratio | CPU p99 ratio "
        "| request p50 / p99 ms (without) | p99 ratio | CPU p99 ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["max_per"]:
        lines.append(
            f"| {r['task']} | {r['attr']} | {r['n']} | {r['recall_at_10']:.3f} "
            f"| {r['unconstrained_overlap']:.2f} | {r['mean_results']:.1f} | {r['short_answers']} "
            f"| {r['p50_ms']:.2f} / {r['p99_ms']:.2f} "
            f"({r['plain_p50_ms']:.2f} / {r['plain_p99_ms']:.2f}) | {r['p99_ratio']:.2f}x "
            f"| {r['cpu_p99_ratio']:.2f}x "
            f"| {r['request_p50_ms']:.2f} / {r['request_p99_ms']:.2f} "
            f"({r['request_plain_p50_ms']:.2f} / {r['request_plain_p99_ms']:.2f}) "
            f"| {r['request_p99_ratio']:.2f}x | {r['request_cpu_p99_ratio']:.2f}x |"
        )
    e = result["explain"]
    lines += [
        "",
        f"**explain** (recommend from {e['recent_items']} recent items, k=10, through the "
        f"worker's answer path and the reply's JSON encoding, {e['queries']} queries)",
        "",
        "| | mean ms | p50 ms | p99 ms | CPU mean ms | CPU p50 ms | CPU p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("plain", "explain"):
        lines.append(
            f"| {name} | {e[f'{name}_mean_ms']:.3f} | {e[f'{name}_p50_ms']:.3f} "
            f"| {e[f'{name}_p99_ms']:.3f} | {e[f'cpu_{name}_mean_ms']:.3f} "
            f"| {e[f'cpu_{name}_p50_ms']:.3f} | {e[f'cpu_{name}_p99_ms']:.3f} |"
        )
    lines += [
        "",
        f"explain / plain: {e['mean_ratio']:.2f}x mean, {e['p50_ratio']:.2f}x p50, "
        f"{e['p99_ratio']:.2f}x p99; CPU {e['cpu_mean_ratio']:.2f}x mean, "
        f"{e['cpu_p50_ratio']:.2f}x p50, {e['cpu_p99_ratio']:.2f}x p99; contributions sum to "
        f"the score within {e['max_relative_sum_error']:.1e} (relative, worst item)",
        "",
    ]
    return lines
