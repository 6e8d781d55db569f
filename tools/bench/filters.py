"""`annrec bench filters`: recall@10 and speed of filtered queries at 50% ... 0.01% selectivity.

One version is built from synthetic factors with synthetic attributes; its `bucket` attribute
passes exactly 50%, 10%, 1%, 0.1% and 0.01% of the items (index_builder/synth.py). For each
selectivity and task, every query runs three ways, side by side (interleaved, one thread):

- post-filter: the unfiltered answer (query_engine/plan.py, as served) asked for POST_FILTER_FETCH x
  k items, then the passing ones kept (what a filter bolted onto an ANN library does);
- planner: what the worker serves (query_engine/plan.py -> query_engine/filtered.py, the version's
  measured threshold; its exact path scores large subsets band by band under the norm bound);
- exact over the subset: every passing item scored, one matrix product over the gathered rows
  (or, above 25% of the catalogue, a masked full scan); also the ground truth.

Each query's time includes evaluating the filter (`bucket == value` -> a selection), as a
request's does. Then the rows of `max_per` and `explain` (tools/bench/constrained.py) on the
same version and queries. Figures: JSON, Markdown tables on stdout, and a PNG.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from index_builder.progress import progress_bar
from index_builder.publish import BuildOptions, publish_version
from index_builder.synth import BUCKET_SELECTIVITIES, synth_attributes, synth_factors
from query_engine import filtered
from query_engine.selection import Selection, select
from query_engine.vectors import recall_at_k
from schemas.filters import AttrEquals
from tools.bench import constrained
from tools.bench.cli import add_catalogue, add_quick, apply_quick
from tools.bench.machine import describe, machine_info
from worker.index_store import LoadedVersion, load_version

K = 10
POST_FILTER_FETCH = 10  # post-filtering asks the index for 10 x k results
STRATEGIES = ("post_filter", "planner", "exact_subset")
TASKS = ("recommend", "similar_items")
Rows = npt.NDArray[np.int64]
Runner = Callable[[int, Selection], Rows]

QUICK = {"items": 20_000, "users": 2_000, "dim": 16, "queries": 30}


def register(parser: argparse.ArgumentParser) -> None:
    add_quick(parser, QUICK)
    add_catalogue(parser)
    parser.add_argument("--queries", type=int, default=200, help="per selectivity and task")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    a = apply_quick(args)
    bench_filters(a.out, a.items, a.users, a.dim, a.queries)
    return 0


def bench_filters(
    out: Path, n_items: int, n_users: int, dim: int, n_queries: int, seed: int = 0
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    factors = synth_factors(n_items, n_users, dim, seed=seed)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        storage = Path(tmp)
        attributes = synth_attributes(n_items, seed)
        constrained.with_maker(attributes, factors.item_factors, seed)
        manifest = publish_version(factors, storage, BuildOptions(seed=seed), attributes=attributes)
        version = load_version(storage, manifest.version)
        try:
            rng = np.random.default_rng(seed)
            users = factors.user_factors[rng.choice(n_users, min(n_users, n_queries), False)]
            item_rows = rng.choice(n_items, min(n_items, n_queries), replace=False)
            with threadpool_limits(1, user_api="blas"):
                tasks = {
                    "recommend": _task(version, _recommenders(version, users), len(users)),
                    "similar_items": _task(
                        version, _similar_finders(version, item_rows), len(item_rows)
                    ),
                }
                max_per = constrained.max_per_rows(version, users, item_rows)
                explain = constrained.explain_row(version, len(users), seed)
        finally:
            version.close()
    quality = manifest.quality
    result = {
        "command": f"annrec bench filters --items {n_items} --users {n_users} --dim {dim} "
        f"--queries {n_queries}",
        "params": {
            "n_items": n_items,
            "n_users": n_users,
            "dim": dim,
            "queries": n_queries,
            "k": K,
            "post_filter_fetch": POST_FILTER_FETCH * K,
            "seed": seed,
        },
        "thresholds": {
            kind: getattr(quality, kind).filter_threshold if quality else None for kind in TASKS
        },
        # What the build measured to pick each threshold (random subsets; index path vs the
        # planner's exact path), and how each kind is served unfiltered.
        "quality": {
            kind: {
                "strategy": getattr(quality, kind).strategy,
                "filter_curve": [p.model_dump() for p in getattr(quality, kind).filter_curve],
            }
            for kind in TASKS
        }
        if quality
        else None,
        "tasks": tasks,
        "max_per": max_per,
        "explain": explain,
        "machine": machine_info(),
    }
    (out / "filters.json").write_text(json.dumps(result, indent=2))
    _plot(out / "filters.png", result)
    print(markdown(result))
    return result


def _task(version: LoadedVersion, runners: dict[str, Runner], n_queries: int) -> list[dict]:
    rows = []
    order = np.random.default_rng(1)
    attrs = version.attributes
    assert attrs is not None
    for value, selectivity in progress_bar(BUCKET_SELECTIVITIES.items(), desc="selectivities"):
        flt = AttrEquals(attr="bucket", eq=value)
        found: dict[str, list[Rows]] = {s: [] for s in STRATEGIES}
        seconds: dict[str, list[float]] = {s: [] for s in STRATEGIES}
        for q in range(n_queries):
            # Interleaved, so the three share every moment of noise; in a random order, so
            # none systematically runs right after another has warmed the caches with the
            # same rows (the planner's exact path and exact-over-subset read the same ones).
            for name in order.permutation(STRATEGIES).tolist():
                start = time.perf_counter()
                keep = select(attrs, flt, None, version.manifest.n_items)
                assert keep is not None
                found[name].append(runners[name](q, keep))
                seconds[name].append(time.perf_counter() - start)
        truth = found["exact_subset"]
        assert keep is not None
        row: dict[str, Any] = {"value": value, "selectivity": selectivity, "passing": keep.count}
        for name in STRATEGIES:
            lat = np.array(seconds[name]) * 1000
            row[name] = {
                "recall_at_10": float(
                    np.mean([recall_at_k(f, t) for f, t in zip(found[name], truth, strict=True)])
                ),
                "mean_results": float(np.mean([len(f) for f in found[name]])),
                "queries_per_s": n_queries / max(float(np.sum(seconds[name])), 1e-9),
                "p50_ms": float(np.percentile(lat, 50)),
                "p99_ms": float(np.percentile(lat, 99)),
            }
        rows.append(row)
    return rows


def _recommenders(v: LoadedVersion, users: npt.NDArray[np.float32]) -> dict[str, Runner]:
    def post_filter(q: int, keep: Selection) -> Rows:
        rows, _ = v.search.recommend(users[q], POST_FILTER_FETCH * K)
        return rows[keep.passes(rows)][:K]

    def planner(q: int, keep: Selection) -> Rows:
        return v.search.recommend(users[q], K, keep)[0]

    def exact(q: int, keep: Selection) -> Rows:
        return filtered.subset_max_inner_product(v.item_factors, users[q], K, keep)[0]

    return {"post_filter": post_filter, "planner": planner, "exact_subset": exact}


def _similar_finders(v: LoadedVersion, item_rows: npt.NDArray[np.int64]) -> dict[str, Runner]:
    def post_filter(q: int, keep: Selection) -> Rows:
        rows, _ = v.search.similar_items(int(item_rows[q]), POST_FILTER_FETCH * K)
        return rows[keep.passes(rows)][:K]

    def planner(q: int, keep: Selection) -> Rows:
        return v.search.similar_items(int(item_rows[q]), K, keep)[0]

    def exact(q: int, keep: Selection) -> Rows:
        row = int(item_rows[q])
        return filtered.exact_similar_items(v.item_factors, v.search.item_norms, row, K, keep)[0]

    return {"post_filter": post_filter, "planner": planner, "exact_subset": exact}


def markdown(result: dict[str, Any]) -> str:
    p = result["params"]
    lines = [
        f"annrec bench filters: {p['n_items']:,} items x {p['dim']}, {p['queries']} queries per "
        f"selectivity, k={p['k']}, post-filter fetches {p['post_filter_fetch']}; thresholds "
        + ", ".join(f"{k} {v}" for k, v in result["thresholds"].items()),
        f"machine: {describe(result['machine'])}",
        "",
    ]
    for task, rows in result["tasks"].items():
        lines += [
            f"**{task}**",
            "",
            "| selectivity | passing | post-filter recall | planner recall | exact recall "
            "| post-filter q/s | planner q/s | exact-over-subset q/s | planner / exact "
            "| planner p50 / p99 ms |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            post, plan, exact = r["post_filter"], r["planner"], r["exact_subset"]
            lines.append(
                f"| {r['selectivity']:.2%} | {r['passing']:,} | {post['recall_at_10']:.3f} "
                f"| {plan['recall_at_10']:.3f} | {exact['recall_at_10']:.3f} "
                f"| {post['queries_per_s']:,.0f} | {plan['queries_per_s']:,.0f} "
                f"| {exact['queries_per_s']:,.0f} "
                f"| {plan['queries_per_s'] / exact['queries_per_s']:.2f}x "
                f"| {plan['p50_ms']:.2f} / {plan['p99_ms']:.2f} |"
            )
        lines.append("")
    if "max_per" in result:
        lines += constrained.markdown(result)
    return "\n".join(lines)


def _plot(path: Path, result: dict[str, Any]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    styles = {
        "post_filter": ("tab:red", "x", "post-filter (fetch 10·k, drop)"),
        "planner": ("tab:blue", "o", "planner (served)"),
        "exact_subset": ("black", "s", "exact over the subset"),
    }
    fig = Figure(figsize=(12, 9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    for col, (task, rows) in enumerate(result["tasks"].items()):
        x = [r["selectivity"] * 100 for r in rows]
        for name, (color, marker, label) in styles.items():
            axes[0][col].plot(
                x, [r[name]["recall_at_10"] for r in rows], color=color, marker=marker, label=label
            )
            axes[1][col].plot(
                x, [r[name]["queries_per_s"] for r in rows], color=color, marker=marker, label=label
            )
        axes[0][col].axhline(0.95, color="gray", linestyle=":", label="target 0.95")
        axes[0][col].set_title(f"{task}: recall@10")
        axes[1][col].set_title(f"{task}: queries/s, one thread")
        axes[1][col].set_yscale("log")
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xscale("log")
            ax.set_xlabel("selectivity (% of items passing)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize="small")
    p = result["params"]
    fig.suptitle(f"Filtered top-{p['k']}: {p['n_items']:,} items x {p['dim']}")
    fig.savefig(path, dpi=110)
