"""The `max_per` and `explain` rows of `annrec bench filters` (query_engine/diversity.py,
query_engine.vectors.explain_scores).

max_per: for each attribute and n = 1..3, every query runs three ways, interleaved: the request
as served (VersionSearch.*_max_per, the constraint looked up as a request does), the same query
without max_per (VersionSearch.recommend / similar_items, the p99 it is held to), and the exact
constrained top-10 (every item scored, walked greedily in score order, one item at a time: the
reference, independent of diversity.py). Attributes: `brand` (200 values, independent of the
factors), `category` (20, Zipf-sized) and `maker` (100 values following the factors: the nearest
of 100 random directions, so a user's top items crowd into a few makers, the wall max_per is
for).

explain: `recommend` with the same 10 recent items through the worker's answer path, with and
without `explain`, interleaved; and how far each explained item's contributions (all of them)
sum from its score.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from index_builder.attributes import AttributeTable, Column
from query_engine.confidence import fold_in_confidences
from query_engine.diversity import max_per_of
from query_engine.vectors import cosine_scores, explain_scores, recall_at_k, unit_rows
from schemas.events import RecommendRequest
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
        for attr in MAX_PER_ATTRS:
            codes = attrs.value_codes(attr)
            for n in MAX_PER_NS:
                found: dict[str, list[Rows]] = {"served": [], "plain": [], "exact": []}
                seconds: dict[str, list[float]] = {"served": [], "plain": []}
                for q in range(n_queries):
                    subject = users[q] if task == "recommend" else int(item_rows[q])
                    runs, scores = _runners(v, task, subject, attr, n)
                    for name in np.random.default_rng(q).permutation(list(runs)).tolist():
                        start = time.perf_counter()
                        found[name].append(runs[name]())
                        seconds[name].append(time.perf_counter() - start)
                    found["exact"].append(np.asarray(_greedy(scores, codes, n, K)))
                out.append(_row(task, attr, n, found, seconds))
    return out


def _runners(
    v: LoadedVersion, task: str, subject: Scores | int, attr: str, n: int
) -> tuple[dict[str, Callable[[], Rows]], Scores]:
    """(the served and the unconstrained query, every item's exact score) for one subject."""
    attrs = v.attributes
    if isinstance(subject, int):
        row = subject
        scores = cosine_scores(np.asarray(v.item_factors), v.search.item_norms, v.item_factors[row])
        scores[row] = -np.inf

        def similar_served() -> Rows:
            return v.search.similar_items_max_per(row, K, max_per_of(attrs, attr, n))[0]

        def similar_plain() -> Rows:
            return v.search.similar_items(row, K)[0]

        return {"served": similar_served, "plain": similar_plain}, scores
    query = subject

    def served() -> Rows:
        return v.search.recommend_max_per(query, K, max_per_of(attrs, attr, n))[0]

    def plain() -> Rows:
        return v.search.recommend(query, K)[0]

    return {"served": served, "plain": plain}, (np.asarray(v.item_factors) @ query).astype(
        np.float32
    )


def _row(
    task: str,
    attr: str,
    n: int,
    found: dict[str, list[Rows]],
    seconds: dict[str, list[float]],
) -> dict[str, Any]:
    served, plain = (np.array(seconds[s]) * 1000 for s in ("served", "plain"))
    truth = found["exact"]
    results = [len(f) for f in found["served"]]
    possible = [len(t) for t in truth]
    # How much the constraint changes the answer: the unconstrained top-10's share of the
    # constrained one (1.0: max_per changed nothing).
    overlap = [recall_at_k(p, t) for p, t in zip(found["plain"], truth, strict=True)]
    return {
        "task": task,
        "attr": attr,
        "n": n,
        "queries": len(truth),
        "recall_at_10": float(
            np.mean([recall_at_k(f, t) for f, t in zip(found["served"], truth, strict=True)])
        ),
        "unconstrained_overlap": float(np.mean(overlap)),
        "mean_results": float(np.mean(results)),
        "short_answers": int(sum(r < p for r, p in zip(results, possible, strict=True))),
        "p50_ms": float(np.percentile(served, 50)),
        "p99_ms": float(np.percentile(served, 99)),
        "plain_p50_ms": float(np.percentile(plain, 50)),
        "plain_p99_ms": float(np.percentile(plain, 99)),
        "p99_ratio": float(np.percentile(served, 99) / np.percentile(plain, 99)),
    }


def explain_row(v: LoadedVersion, n_queries: int, seed: int = 0) -> dict[str, Any]:
    """recommend from RECENT_ITEMS random items, plain vs explain, through worker.answer."""
    rng = np.random.default_rng(seed + 11)
    n_items = v.manifest.n_items
    seconds: dict[str, list[float]] = {"plain": [], "explain": []}
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
            start = time.perf_counter()
            reply = answer(requests[name], v, "bench")
            seconds[name].append(time.perf_counter() - start)
        rows = v.item_rows.rows([i.item_id for i in reply.items])[0]
        seen, confidence = fold_in_confidences(v.fold_in, recent)  # the version's weighting
        terms = explain_scores(
            v.gramian, v.item_factors[seen], v.item_factors[rows], f.regularization, confidence
        )
        served = np.array([i.score for i in reply.items], dtype=np.float64)
        errors += (np.abs(terms.sum(axis=1) - served) / np.abs(served)).tolist()
    plain, explained = (np.array(seconds[s]) * 1000 for s in ("plain", "explain"))
    return {
        "queries": n_queries,
        "recent_items": RECENT_ITEMS,
        "plain_mean_ms": float(plain.mean()),
        "explain_mean_ms": float(explained.mean()),
        "plain_p50_ms": float(np.percentile(plain, 50)),
        "explain_p50_ms": float(np.percentile(explained, 50)),
        "plain_p99_ms": float(np.percentile(plain, 99)),
        "explain_p99_ms": float(np.percentile(explained, 99)),
        "mean_ratio": float(explained.mean() / plain.mean()),
        "p99_ratio": float(np.percentile(explained, 99) / np.percentile(plain, 99)),
        "max_relative_sum_error": float(max(errors)),
    }


def markdown(result: dict[str, Any]) -> list[str]:
    lines = [
        "**max_per** (k=10; recall against the exact constrained top-10; p99 against the same "
        "query without max_per)",
        "",
        "| task | attribute | n | recall@10 | unconstrained overlap | mean results | short "
        "| p50 / p99 ms | unconstrained p50 / p99 ms | p99 ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["max_per"]:
        lines.append(
            f"| {r['task']} | {r['attr']} | {r['n']} | {r['recall_at_10']:.3f} "
            f"| {r['unconstrained_overlap']:.2f} | {r['mean_results']:.1f} | {r['short_answers']} "
            f"| {r['p50_ms']:.2f} / {r['p99_ms']:.2f} "
            f"| {r['plain_p50_ms']:.2f} / {r['plain_p99_ms']:.2f} | {r['p99_ratio']:.2f}x |"
        )
    e = result["explain"]
    lines += [
        "",
        f"**explain** (recommend from {e['recent_items']} recent items, k=10, through the "
        f"worker's answer path, {e['queries']} queries)",
        "",
        "| | mean ms | p50 ms | p99 ms |",
        "|---|---|---|---|",
        f"| plain | {e['plain_mean_ms']:.3f} | {e['plain_p50_ms']:.3f} | {e['plain_p99_ms']:.3f} |",
        f"| explain | {e['explain_mean_ms']:.3f} | {e['explain_p50_ms']:.3f} "
        f"| {e['explain_p99_ms']:.3f} |",
        "",
        f"explain / plain: {e['mean_ratio']:.2f}x mean, {e['p99_ratio']:.2f}x p99; contributions "
        f"sum to the score within {e['max_relative_sum_error']:.1e} (relative, worst item)",
        "",
    ]
    return lines
