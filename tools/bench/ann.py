"""`annrec bench ann`: annrec's query path against brute force and other ANN libraries.

For each dataset (synthetic factors; ALS factors trained on synthetic interactions) and each task
(item -> items by cosine; user -> items by inner product), every method goes through the same loop
(tools/bench/sweep.py): recall@10 against an exact top-10 (blocked GEMM, computed once) over all
sampled queries, queries/s over a fixed subset of them, one query at a time on one thread (BLAS
pinned to 1). annrec's method is what a worker runs: the indexes built as
index_builder/publish.py builds them, queried as a worker queries them (item -> items: angular
Annoy + exact rerank, query_engine.search; user -> items: the norm bands, query_engine.banded). With
variants, user -> items also measures the alternatives of tools/bench/mips_variants.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from annoy import AnnoyIndex
from threadpoolctl import threadpool_info, threadpool_limits

from index_builder.build import build_annoy
from index_builder.inputs import Factors
from index_builder.progress import progress_bar
from index_builder.publish import BuildOptions
from index_builder.synth import synth_factors, synth_interactions
from query_engine import search
from query_engine.vectors import top_k, unit_rows
from schemas.errors import InvalidInput
from tools.bench import peers as peer_libs
from tools.bench.ann_table import print_tables
from tools.bench.cli import add_quick, apply_quick
from tools.bench.machine import machine_info
from tools.bench.mips_variants import measure_bands, measure_variants
from tools.bench.peers import Metric
from tools.bench.plots import plot_dataset
from tools.bench.sweep import (
    BATCH,
    STOP_RECALL,
    Answer,
    IntArray,
    K,
    Param,
    Task,
    add_speedups,
    exact_top_k,
    mean_recall,
    measure,
    method_entry,
    point,
    search_k_grid,
    sweep,
)

FloatArray = npt.NDArray[np.float32]
DATASETS = ("synth", "als")
TASKS = ("item->items", "user->items")
EXTRA_PACKAGES = ("hnswlib", "scann", "matplotlib", "threadpoolctl")
DIM = 64
# ALS dataset: trains in seconds at 100k items, about a minute at 1M on 2 cores. Items nobody
# interacted with get no factors (~2/3 of the requested items remain at 100k).
ALS_USERS_PER_ITEM = 10  # n_users = n_items // 10
ALS_INTERACTIONS_PER_USER = 30
ALS_TASTE_DIM = 16  # synth_interactions' latent taste model
ALS_ITERATIONS = 10

QUICK = {"items": 3_000, "datasets": "synth", "queries": 100, "timed_queries": 30}


def register(parser: argparse.ArgumentParser) -> None:
    add_quick(parser, QUICK)
    parser.add_argument("--items", type=int, default=100_000, help="catalogue size (100k, 1M)")
    parser.add_argument("--datasets", default="synth,als", help="comma list of synth, als")
    parser.add_argument("--trees", type=int, default=20, help="angular (and xbox) index trees")
    parser.add_argument("--mips-trees", type=int, default=10, help="trees per MIPS norm band")
    parser.add_argument("--tasks", default="item->items,user->items", help="comma list")
    parser.add_argument(
        "--no-variants", action="store_true", help="skip the user -> items alternatives"
    )
    parser.add_argument("--queries", type=int, default=1000, help="recall is measured on these")
    parser.add_argument("--timed-queries", type=int, default=200, help="timed one at a time")
    parser.add_argument("--no-peers", action="store_true", help="skip hnswlib and ScaNN")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    a = apply_quick(args)
    bench_ann(
        a.out,
        a.items,
        a.datasets.split(","),
        a.trees,
        a.queries,
        a.timed_queries,
        peers=not a.no_peers,
        mips_trees=a.mips_trees,
        tasks=tuple(a.tasks.split(",")),
        variants=not a.no_variants,
    )
    return 0


def bench_ann(
    out: Path,
    n_items: int,
    datasets: list[str] = ["synth", "als"],  # noqa: B006 - never mutated
    n_trees: int = 20,
    queries: int = 1000,
    timed_queries: int = 200,
    seed: int = 0,
    peers: bool = True,
    *,
    mips_trees: int = 10,
    tasks: tuple[str, ...] = TASKS,
    variants: bool = True,
    band_trees: tuple[int, ...] = (5, 20),
) -> dict[str, Any]:
    """Measure every method on every dataset and task; write ann.json and ann-<dataset>.png into
    `out`; print the tables on stdout (progress and notes go to stderr); return ann.json's dict."""
    run = _Run(
        n_items=n_items,
        datasets=list(datasets),
        n_trees=n_trees,
        queries=queries,
        timed_queries=timed_queries,
        seed=seed,
        peers=peers,
        mips_trees=mips_trees,
        tasks=tuple(tasks),
        variants=variants,
        band_trees=tuple(band_trees),
    )
    run.check()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    blas_default = [i.get("num_threads") for i in threadpool_info() if i["user_api"] == "blas"]
    usable = _usable_peers(peers)
    result = _header(run, usable)
    with (
        threadpool_limits(1, user_api="blas"),
        tempfile.TemporaryDirectory(dir=out, prefix=".ann-tmp-") as tmp,
    ):
        result["machine"] = machine_info() | {"blas_threads_default": blas_default}
        result["machine"]["packages"] |= {p: _version(p) for p in EXTRA_PACKAGES}
        for name in run.datasets:
            info = _measure_dataset(run, name, usable, Path(tmp))
            result["datasets"][name] = info
            result["plots"].append(_plot(out, name, info, n_trees, mips_trees))
            # Written after every dataset: an interrupted long run keeps what it measured.
            (out / "ann.json").write_text(json.dumps(result, indent=2))
    result["wall_s"] = round(time.perf_counter() - started, 1)
    (out / "ann.json").write_text(json.dumps(result, indent=2))
    print_tables(result)
    return result


@dataclass(frozen=True)
class _Run:
    """What one `bench ann` run measures (bench_ann's arguments)."""

    n_items: int
    datasets: list[str]
    n_trees: int
    queries: int
    timed_queries: int
    seed: int
    peers: bool
    mips_trees: int
    tasks: tuple[str, ...]
    variants: bool
    band_trees: tuple[int, ...]

    def check(self) -> None:
        if not self.datasets or set(self.datasets) - set(DATASETS):
            raise InvalidInput(
                f"datasets must be among {', '.join(DATASETS)} (got {self.datasets})"
            )
        if not self.tasks or set(self.tasks) - set(TASKS):
            raise InvalidInput(f"tasks must be among {', '.join(TASKS)} (got {self.tasks})")


def _header(run: _Run, usable: dict[peer_libs.Peer, dict[str, Any]]) -> dict[str, Any]:
    """ann.json before any measurement: the command, its parameters and the peers' status."""
    return {
        "benchmark": "ann",
        "command": shlex.join(sys.argv),
        "params": {
            "n_items": run.n_items,
            "datasets": list(run.datasets),
            "n_trees": run.n_trees,
            "mips_trees": run.mips_trees,
            "tasks": list(run.tasks),
            "variants": run.variants,
            "band_trees": list(run.band_trees) if run.variants else [],
            "queries": run.queries,
            "timed_queries": run.timed_queries,
            "seed": run.seed,
            "peers": run.peers,
            "k": K,
            "dim": DIM,
            "batch": BATCH,
            "stop_recall": STOP_RECALL,
            "build_threads": os.cpu_count(),
            "search_threads": 1,
            "als": {
                "n_users": f"n_items // {ALS_USERS_PER_ITEM}",
                "interactions_per_user": ALS_INTERACTIONS_PER_USER,
                "taste_dim": ALS_TASTE_DIM,
                "factors": DIM,
                "iterations": ALS_ITERATIONS,
            },
        },
        "peers": {p.name: status for p, status in usable.items()},
        "datasets": {},
        "plots": [],
    }


def _measure_dataset(
    run: _Run, name: str, usable: dict[peer_libs.Peer, dict[str, Any]], tmp: Path
) -> dict[str, Any]:
    """One dataset: its description and, per task asked for, every method's points."""
    factors, info = dataset(name, run.n_items, run.seed)
    info["tasks"] = {}
    rng = np.random.default_rng(run.seed)
    for task in _tasks(factors, rng, run.queries, run.timed_queries):
        if task.name not in run.tasks:
            continue
        methods = _methods(run, task, factors, usable, tmp)
        add_speedups(methods, *(m["points"][0]["queries_per_s"] for m in methods[:2]))
        info["tasks"][task.name] = {
            "metric": task.metric,
            "queries": len(task.truth),
            "timed_queries": task.timed,
            "ground_truth_s": round(task.truth_s, 2),
            "methods": methods,
        }
    return info


def _methods(
    run: _Run,
    task: Task,
    factors: Factors,
    usable: dict[peer_libs.Peer, dict[str, Any]],
    tmp: Path,
) -> list[dict[str, Any]]:
    """Brute force (single, batched) first, then annrec's method (and its variants), then the
    peers available."""
    methods = _brute_force(task, factors)
    floor = methods[0]["points"][0]["queries_per_s"]
    if task.metric == "cosine":
        methods.append(_annrec_similar(task, factors, tmp, run.n_trees))
    else:
        items = factors.item_factors
        methods.append(measure_bands(task, items, tmp, run.mips_trees, "annrec", floor))
        if run.variants:
            methods += measure_variants(
                task, factors, tmp, run.n_trees, list(run.band_trees), floor
            )
    for peer, status in usable.items():
        if status["available"]:
            methods.append(_peer(peer, task, factors, run.seed))
    return methods


def _usable_peers(enabled: bool) -> dict[peer_libs.Peer, dict[str, Any]]:
    status: dict[peer_libs.Peer, dict[str, Any]] = {}
    for peer in peer_libs.PEERS:
        if not enabled:
            status[peer] = {"available": False, "skipped": "peers disabled"}
            continue
        ok, detail = peer_libs.available(peer)
        if not ok:
            print(f"note: skipping {peer.name}: {detail}", file=sys.stderr)
        status[peer] = {"available": ok, ("version" if ok else "skipped"): detail}
    return status


def dataset(name: str, n_items: int, seed: int) -> tuple[Factors, dict[str, Any]]:
    start = time.perf_counter()
    n_users = max(1, n_items // ALS_USERS_PER_ITEM)
    info: dict[str, Any]
    if name == "synth":
        factors = synth_factors(n_items, n_users, DIM, seed=seed)
        info = {"source": "index_builder.synth.synth_factors (64 clusters, lognormal norms)"}
    else:
        from index_builder.train import make_interactions, train_als

        print(f"als: interactions of {n_users:,} users, then ALS", file=sys.stderr)
        users, items, weights = synth_interactions(
            n_users, n_items, ALS_TASTE_DIM, ALS_INTERACTIONS_PER_USER, seed=seed
        )
        interactions = make_interactions(users, items, weights)
        factors, params = train_als(interactions, factors=DIM, iterations=ALS_ITERATIONS, seed=seed)
        info = {
            "source": "index_builder.train.train_als on index_builder.synth.synth_interactions",
            # Items nobody interacted with are not in the log, so ALS has no factors for them.
            "n_items_requested": n_items,
            "n_interactions": interactions.n_interactions,
            "als": params.model_dump(),
        }
    norms = np.linalg.norm(factors.item_factors, axis=1)
    quantiles = (1, 50, 99, 100)
    info |= {
        "n_items": len(factors.item_ids),
        "n_users": len(factors.user_ids),
        "dim": factors.dim,
        "prepare_s": round(time.perf_counter() - start, 2),
        # Skewed item norms are what the MIPS augmentation struggles with: report them.
        "item_norm_percentiles": {
            f"p{q}": round(float(v), 4)
            for q, v in zip(quantiles, np.percentile(norms, quantiles), strict=True)
        },
    }
    return factors, info


def _tasks(factors: Factors, rng: np.random.Generator, n_queries: int, timed: int) -> list[Task]:
    """Sampled queries and their exact answers: items by cosine (themselves excluded), users by
    inner product."""
    items, users = factors.item_factors, factors.user_factors
    unit = unit_rows(items)
    rows = rng.choice(len(items), size=min(n_queries, len(items)), replace=False).astype(np.int64)
    picked = rng.choice(len(users), size=min(n_queries, len(users)), replace=False)
    return [
        _task("item->items", "cosine", unit, unit[rows], rows, timed),
        _task("user->items", "inner_product", items, users[picked], None, timed),
    ]


def _task(
    name: str,
    metric: Metric,
    matrix: FloatArray,
    queries: FloatArray,
    rows: IntArray | None,
    timed: int,
) -> Task:
    queries = np.ascontiguousarray(queries)
    start = time.perf_counter()
    truth = exact_top_k(matrix, queries, K, rows, desc=f"ground truth {name}")
    elapsed = time.perf_counter() - start
    return Task(name, metric, queries, rows, truth, elapsed, min(timed, len(queries)))


def _brute_force(task: Task, factors: Factors) -> list[dict[str, Any]]:
    """Single-query brute force (one GEMV + top_k) and batched (BATCH queries per GEMM), on the
    matrix the exact answer comes from (unit vectors for cosine: normalizing is their build)."""
    start = time.perf_counter()
    matrix = unit_rows(factors.item_factors) if task.metric == "cosine" else factors.item_factors
    prepare_s = time.perf_counter() - start

    def answer(q: int) -> IntArray:
        scores = matrix @ task.vectors[q]
        if task.rows is not None:
            scores[task.rows[q]] = -np.inf
        return top_k(scores, K)

    single = method_entry("brute_single", "brute force, one query", prepare_s, matrix.nbytes)
    single["points"] = [point({}, *measure(task, answer))]
    start = time.perf_counter()
    found = exact_top_k(matrix, task.vectors, K, task.rows)
    qps = len(found) / max(time.perf_counter() - start, 1e-9)
    batched = method_entry("brute_batched", f"brute force, {BATCH}/GEMM", prepare_s, matrix.nbytes)
    # Timed over every query, not the timed subset: that subset is smaller than one batch.
    batched |= {"timed_queries": len(found), "settings": {"batch": BATCH}}
    batched["points"] = [point({}, mean_recall(found, task.truth), qps)]
    return [single, batched]


def _annrec_similar(task: Task, factors: Factors, tmp: Path, n_trees: int) -> dict[str, Any]:
    """The angular index exactly as publish_version builds it, queried as the worker queries it."""
    opts = BuildOptions(n_trees=n_trees)
    items = factors.item_factors
    path = tmp / "items.angular.ann"
    start = time.perf_counter()
    build_annoy(
        items,
        path,
        metric="angular",
        n_trees=n_trees,
        seed=opts.seed,
        n_jobs=opts.n_jobs,
        label="angular",
    )
    build_s = time.perf_counter() - start
    index = AnnoyIndex(int(items.shape[1]), "angular")
    index.load(str(path), prefault=True)  # a worker warms every page before it serves
    norms = np.linalg.norm(items, axis=1).astype(np.float32)  # as worker/index_store.py does
    rows = task.rows if task.rows is not None else np.empty(0, dtype=np.int64)

    def answer_for(param: Param) -> Answer:
        sk = param["search_k"]
        return lambda q: search.similar_items(index, items, norms, int(rows[q]), K, sk)[0]

    n_candidates = (K + 1) * search.OVERFETCH
    grid = [[{"search_k": s} for s in search_k_grid(n_candidates, len(items))]]
    method = method_entry("annrec", "annrec (Annoy+rerank)", build_s, path.stat().st_size)
    method["settings"] = {
        "index": "angular",
        "n_trees": n_trees,
        "seed": opts.seed,
        "candidates": n_candidates,
        # The rerank also reads the item factors; hnswlib and ScaNN hold vectors in their index.
        "item_factors_bytes": int(items.nbytes),
    }
    method["points"] = sweep(f"annrec {task.name}", task, grid, answer_for)
    index.unload()
    path.unlink()
    return method


def _peer(peer: peer_libs.Peer, task: Task, factors: Factors, seed: int) -> dict[str, Any]:
    with progress_bar(
        total=1, desc=f"build {peer.name} {task.name}", unit="index", leave=False
    ) as bar:
        built = peer.build(factors.item_factors, task.metric, seed)
        bar.update(1)
    # By an item's own vector the item is its own nearest neighbour: ask one more, drop it.
    n = K + 1 if task.rows is not None else K

    def answer_for(param: Param) -> Answer:
        return lambda q: task.drop_self(q, built.search(param, task.vectors[q], n))

    method = method_entry(peer.name, peer.name, built.build_s, built.index_bytes)
    method["settings"] = built.settings
    method["points"] = sweep(
        f"{peer.name} {task.name}", task, built.grid, answer_for, built.stop_on_plateau
    )
    return method


def _plot(out: Path, name: str, info: dict[str, Any], n_trees: int, mips_trees: int) -> str | None:
    path = out / f"ann-{name}.png"
    title = (
        f"{name}: {info['n_items']:,} items x {info['dim']}, recall@{K}, "
        f"angular {n_trees} trees, MIPS bands {mips_trees} trees"
    )
    try:
        plot_dataset(path, title, info["tasks"])
    except ImportError as exc:
        print(f"note: no plots ({exc}); pip install 'annrec[bench]'", file=sys.stderr)
        return None
    return path.name


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None
