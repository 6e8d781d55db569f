"""`annrec bench ann`: annrec's query path against brute force and other ANN libraries.

For each dataset (synthetic factors; ALS factors trained on synthetic interactions) and each task
(item -> items by cosine; user -> items by inner product), every method is measured by the same
loop: recall@10 against an exact top-10 (blocked GEMM, computed once) over all sampled queries, and
queries/s over a fixed subset of them, one query at a time on one thread (BLAS pinned to 1).
annrec's method is what a worker runs: the Annoy index built as index_builder/publish.py builds it,
queried through schemas.search (candidates + exact rerank), over a grid of search_k.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from annoy import AnnoyIndex
from threadpoolctl import threadpool_info, threadpool_limits
from tqdm import tqdm

from index_builder.build import build_annoy
from index_builder.inputs import Factors
from index_builder.publish import BuildOptions
from index_builder.synth import synth_factors, synth_interactions
from schemas import search
from schemas.errors import InvalidInput
from schemas.vectors import augment_items, recall_at_k, top_k
from worker.bench import peers as peer_libs
from worker.bench.machine import describe, machine_info
from worker.bench.plots import pareto, plot_dataset

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
Answer = Callable[[int], IntArray]  # query number -> found item rows

K = 10
DIM = 64
BATCH = 256
STOP_RECALL = 0.995  # past this, a larger grid point buys nothing worth measuring
WARMUP = 5  # untimed queries before each timed run: page faults and caches are not the method
# ALS dataset sizes: small enough to train in seconds at 100k items, about a minute at 1M.
ALS_SETUP = {
    "users": "n_items // 10",
    "interactions_per_user": 30,
    "taste_dim": 16,
    "factors": DIM,
    "iterations": 10,
    "regularization": 0.01,
    "alpha": 1.0,
}


@dataclass(frozen=True)
class Task:
    name: str  # "item->items" or "user->items"
    metric: peer_libs.Metric
    vectors: FloatArray  # one query vector per query (unit item vectors for cosine)
    rows: IntArray | None  # item->items: the queried item rows, never part of an answer
    truth: IntArray  # exact top-K item rows per query
    truth_s: float  # time the ground truth took (blocked GEMM, not a method)
    timed: int  # queries/s is measured on the first `timed` queries

    def drop_self(self, q: int, found: IntArray) -> IntArray:
        return found if self.rows is None else found[found != self.rows[q]][:K]


def bench_ann(
    out: Path,
    n_items: int,
    datasets: list[str] = ["synth", "als"],  # noqa: B006 - read only; the signature the CLI calls
    n_trees: int = 50,
    queries: int = 1000,
    timed_queries: int = 200,
    seed: int = 0,
    peers: bool = True,
) -> dict[str, Any]:
    """Run every method on every dataset and task; write ann.json and one PNG per dataset into
    `out`, print the tables on stdout (progress goes to stderr); return what ann.json holds."""
    unknown = sorted(set(datasets) - {"synth", "als"})
    if unknown or not datasets:
        raise InvalidInput(f"datasets must be among synth, als (got {datasets})")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    default_blas_threads = [
        i.get("num_threads") for i in threadpool_info() if i["user_api"] == "blas"
    ]
    peer_status = _peer_status(peers)
    result: dict[str, Any] = {
        "benchmark": "ann",
        "command": shlex.join(sys.argv),
        "params": {
            "n_items": n_items,
            "datasets": list(datasets),
            "n_trees": n_trees,
            "queries": queries,
            "timed_queries": timed_queries,
            "seed": seed,
            "peers": peers,
            "k": K,
            "dim": DIM,
            "batch": BATCH,
            "stop_recall": STOP_RECALL,
            "build_threads": os.cpu_count(),
            "search_threads": 1,
            "als": ALS_SETUP,
        },
        "peers": {name: status for name, (_, status) in peer_status.items()},
        "datasets": {},
        "plots": [],
    }
    with (
        threadpool_limits(1, user_api="blas"),
        tempfile.TemporaryDirectory(dir=out, prefix=".ann-tmp-") as tmp,
    ):
        result["machine"] = machine_info() | {"blas_threads_default": default_blas_threads}
        for name in datasets:
            factors, info = _dataset(name, n_items, seed)
            rng = np.random.default_rng(seed)
            info["tasks"] = {}
            for task in _tasks(factors, rng, queries, timed_queries):
                methods = _brute_force(task, factors)
                methods.append(_annrec(task, factors, Path(tmp), n_trees))
                for peer, (usable, _) in peer_status.items():
                    if usable:
                        methods.append(_peer(peer, task, factors, seed))
                _add_speedups(methods)
                info["tasks"][task.name] = {
                    "metric": task.metric,
                    "queries": len(task.truth),
                    "timed_queries": task.timed,
                    "ground_truth_s": round(task.truth_s, 2),
                    "methods": methods,
                }
            result["datasets"][name] = info
            result["plots"].append(_plot(out, name, info, n_trees))
    result["wall_s"] = round(time.perf_counter() - started, 1)
    (out / "ann.json").write_text(json.dumps(result, indent=2))
    _print(result)
    return result


def _peer_status(enabled: bool) -> dict[peer_libs.Peer, tuple[bool, dict[str, Any]]]:
    status: dict[peer_libs.Peer, tuple[bool, dict[str, Any]]] = {}
    for peer in peer_libs.PEERS:
        if not enabled:
            status[peer] = (False, {"available": None, "skipped": "peers disabled"})
            continue
        usable, detail = peer_libs.available(peer)
        if not usable:
            print(f"note: skipping {peer.name}: {detail}", file=sys.stderr)
        status[peer] = (usable, {"available": usable, "version" if usable else "skipped": detail})
    return status


def _dataset(name: str, n_items: int, seed: int) -> tuple[Factors, dict[str, Any]]:
    start = time.perf_counter()
    n_users = max(1, n_items // 10)
    if name == "synth":
        factors = synth_factors(n_items, n_users, DIM, seed=seed)
        info: dict[str, Any] = {"source": "index_builder.synth.synth_factors (64 clusters)"}
    else:
        from index_builder.train import make_interactions, train_als

        print(f"generating interactions and training ALS ({n_users:,} users)", file=sys.stderr)
        users, items, weights = synth_interactions(
            n_users, n_items, int(ALS_SETUP["taste_dim"]), 30, seed=seed
        )
        interactions = make_interactions(users, items, weights)
        factors, params = train_als(interactions, factors=DIM, iterations=10, seed=seed)
        info = {
            "source": "index_builder.train.train_als on index_builder.synth.synth_interactions",
            "n_items_requested": n_items,
            # Items nobody interacted with are not in the log, so ALS has no factors for them.
            "n_interactions": interactions.n_interactions,
            "implicit": params.implicit_version,
        }
    norms = np.linalg.norm(factors.item_factors, axis=1)
    info |= {
        "n_items": len(factors.item_ids),
        "n_users": len(factors.user_ids),
        "dim": factors.dim,
        "prepare_s": round(time.perf_counter() - start, 2),
        # The norm skew is what makes MIPS hard for the augmentation: report it beside the results.
        "item_norm_percentiles": {
            f"p{p}": round(float(v), 4)
            for p, v in zip((1, 50, 99, 100), np.percentile(norms, [1, 50, 99, 100]), strict=True)
        },
    }
    return factors, info


def _tasks(factors: Factors, rng: np.random.Generator, n_queries: int, timed: int) -> list[Task]:
    items, users = factors.item_factors, factors.user_factors
    unit = _unit(items)
    rows = rng.choice(len(items), size=min(n_queries, len(items)), replace=False).astype(np.int64)
    user_rows = rng.choice(len(users), size=min(n_queries, len(users)), replace=False)
    user_queries = np.ascontiguousarray(users[user_rows])
    specs = [
        ("item->items", "cosine", unit, unit[rows], rows),
        ("user->items", "inner_product", items, user_queries, None),
    ]
    tasks = []
    for name, metric, matrix, vectors, exclude in specs:
        start = time.perf_counter()
        truth = exact_top_k(matrix, vectors, K, exclude, desc=f"ground truth {name}")
        truth_s = time.perf_counter() - start
        tasks.append(Task(name, metric, vectors, exclude, truth, truth_s, min(timed, len(truth))))
    return tasks


def exact_top_k(
    matrix: FloatArray,
    queries: FloatArray,
    k: int,
    exclude: IntArray | None = None,
    desc: str | None = None,
) -> IntArray:
    """Exact top-k rows of `matrix` for each query: one GEMM per BATCH queries, then top_k per
    row; `exclude[i]` is never an answer to query i. The ground truth, and (timed) the batched
    brute force."""
    out = np.empty((len(queries), min(k, len(matrix))), dtype=np.int64)
    starts = range(0, len(queries), BATCH)
    for start in tqdm(starts, desc=desc, unit="batch", leave=False, disable=desc is None):
        scores = queries[start : start + BATCH] @ matrix.T
        if exclude is not None:
            scores[np.arange(len(scores)), exclude[start : start + BATCH]] = -np.inf
        for j, row in enumerate(scores):
            out[start + j] = top_k(row, k)
    return out


def search_k_grid(n_candidates: int, n_items: int) -> list[int]:
    """As the quality report: the candidate count, doubled up to the first value >= n_items."""
    grid = [n_candidates]
    while grid[-1] < n_items:
        grid.append(grid[-1] * 2)
    return grid


def _brute_force(task: Task, factors: Factors) -> list[dict[str, Any]]:
    """Single-query brute force (one GEMV + top_k) and batched brute force (BATCH queries per
    GEMM), both on the matrix the exact answer is computed from (unit vectors for cosine)."""
    start = time.perf_counter()
    matrix = _unit(factors.item_factors) if task.metric == "cosine" else factors.item_factors
    prepare_s = time.perf_counter() - start

    def answer(q: int) -> IntArray:
        scores = matrix @ task.vectors[q]
        if task.rows is not None:
            scores[task.rows[q]] = -np.inf
        return top_k(scores, K)

    recall, qps = _measure(task, answer)
    single = _method("brute_single", "brute force, single query", prepare_s, matrix.nbytes)
    single["points"] = [_point({}, recall, qps)]
    start = time.perf_counter()
    found = exact_top_k(matrix, task.vectors, K, task.rows)
    elapsed = time.perf_counter() - start
    batched = _method(
        f"brute_batched", f"brute force, batches of {BATCH}", prepare_s, matrix.nbytes
    )
    # Timed over every query, not the timed subset: the subset is smaller than one batch.
    batched |= {"timed_queries": len(found), "settings": {"batch": BATCH}}
    batched["points"] = [_point({}, _recall(found, task.truth), len(found) / max(elapsed, 1e-9))]
    return [single, batched]


def _annrec(task: Task, factors: Factors, tmp: Path, n_trees: int) -> dict[str, Any]:
    """Both indexes exactly as publish_version builds them, queried as the worker queries them."""
    opts = BuildOptions(n_trees=n_trees)
    items = factors.item_factors
    cosine = task.metric == "cosine"
    path = tmp / ("items.angular.ann" if cosine else "items.mips.ann")
    start = time.perf_counter()
    vectors = items if cosine else augment_items(items)[0]
    build_annoy(
        vectors,
        path,
        metric="angular",
        n_trees=n_trees,
        seed=opts.seed,
        n_jobs=opts.n_jobs,
        label="angular" if cosine else "mips",
    )
    build_s = time.perf_counter() - start
    index = AnnoyIndex(int(vectors.shape[1]), "angular")
    index.load(str(path), prefault=True)  # a worker warms every page before serving
    norms = np.linalg.norm(items, axis=1).astype(np.float32)  # as worker/index_store.py holds them

    def answer_for(param: peer_libs.Param) -> Answer:
        if cosine:
            assert task.rows is not None
            rows = task.rows
            return lambda q: search.similar_items(
                index, items, norms, int(rows[q]), K, param["search_k"]
            )[0]
        return lambda q: search.max_inner_product(
            index, items, task.vectors[q], K, param["search_k"]
        )[0]

    n_candidates = (K + 1) * search.OVERFETCH if cosine else K * search.OVERFETCH
    grid = [[{"search_k": s} for s in search_k_grid(n_candidates, len(items))]]
    method = _method("annrec", "annrec (Annoy + exact rerank)", build_s, path.stat().st_size)
    method["settings"] = {
        "index": "angular" if cosine else "angular over Bachrach-augmented items (MIPS)",
        "n_trees": n_trees,
        "seed": opts.seed,
        "candidates": n_candidates,
        # The rerank reads the item factors too; hnswlib and ScaNN keep vectors in their index.
        "item_factors_bytes": items.nbytes,
    }
    method["points"] = _sweep(f"annrec {task.name}", task, grid, answer_for)
    index.unload()
    path.unlink()
    return method


def _peer(peer: peer_libs.Peer, task: Task, factors: Factors, seed: int) -> dict[str, Any]:
    with tqdm(total=1, desc=f"build {peer.name} {task.name}", unit="index", leave=False) as bar:
        built = peer.build(factors.item_factors, task.metric, seed)
        bar.update(1)
    # Item queries: the item is its own nearest neighbour, so ask for one more and drop it.
    n = K + 1 if task.rows is not None else K

    def answer_for(param: peer_libs.Param) -> Answer:
        return lambda q: task.drop_self(q, built.search(param, task.vectors[q], n))

    method = _method(peer.name, peer.name, built.build_s, built.index_bytes)
    method["settings"] = built.settings
    method["points"] = _sweep(f"{peer.name} {task.name}", task, built.grid, answer_for)
    return method


def _sweep(
    label: str,
    task: Task,
    grid: list[list[peer_libs.Param]],
    answer_for: Callable[[peer_libs.Param], Answer],
) -> list[dict[str, Any]]:
    """Measure grid points in order; a group stops once recall reaches STOP_RECALL, and the
    sweep stops after a group that reached it (the next groups only cost more)."""
    points: list[dict[str, Any]] = []
    with tqdm(total=sum(map(len, grid)), desc=label, unit="point", leave=False) as bar:
        for group in grid:
            for param in group:
                recall, qps = _measure(task, answer_for(param))
                points.append(_point(param, recall, qps))
                bar.update(1)
                bar.set_postfix(param=param, recall=f"{recall:.3f}", qps=f"{qps:.0f}")
                if recall >= STOP_RECALL:
                    break
            if points[-1]["recall_at_10"] >= STOP_RECALL:
                break
    return points


def _measure(task: Task, answer: Answer) -> tuple[float, float]:
    """(recall@K over all queries, queries/s over the first task.timed, one at a time)."""
    for q in range(min(WARMUP, len(task.truth))):
        answer(q)
    found: list[IntArray] = []
    start = time.perf_counter()
    for q in range(task.timed):
        found.append(answer(q))
    elapsed = time.perf_counter() - start
    found.extend(answer(q) for q in range(task.timed, len(task.truth)))
    return _recall(found, task.truth), task.timed / max(elapsed, 1e-9)


def _recall(found: list[IntArray] | IntArray, truth: IntArray) -> float:
    return float(np.mean([recall_at_k(f, t) for f, t in zip(found, truth, strict=True)]))


def _method(name: str, label: str, build_s: float, index_bytes: int) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "build_s": round(build_s, 3),
        "index_bytes": int(index_bytes),
    }


def _point(param: peer_libs.Param, recall: float, qps: float) -> dict[str, Any]:
    return {"param": param, "recall_at_10": round(recall, 4), "queries_per_s": round(qps, 1)}


def _add_speedups(methods: list[dict[str, Any]]) -> None:
    single, batched = (methods[i]["points"][0]["queries_per_s"] for i in (0, 1))
    for method in methods:
        for p in method["points"]:
            p["speedup_vs_single"] = round(p["queries_per_s"] / single, 2)
            p["speedup_vs_batched"] = round(p["queries_per_s"] / batched, 2)


def _plot(out: Path, name: str, info: dict[str, Any], n_trees: int) -> str | None:
    path = out / f"ann-{name}.png"
    title = f"{name}: {info['n_items']:,} items x {info['dim']}, recall@{K}, Annoy {n_trees} trees"
    try:
        plot_dataset(path, title, info["tasks"])
    except ImportError as exc:
        print(f"note: no plots ({exc}); pip install 'annrec[bench]'", file=sys.stderr)
        return None
    return path.name


def _unit(x: FloatArray) -> FloatArray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1), dtype=np.float32)


def _print(r: dict[str, Any]) -> None:
    p = r["params"]
    print(
        f"annrec bench ann: recall@{K} and queries/s (one query at a time), K={p['dim']}, "
        f"{p['queries']} queries for recall, {p['timed_queries']} timed, seed {p['seed']}"
    )
    print(f"machine: {describe(r['machine'])}")
    blas = [b["num_threads"] for b in r["machine"]["blas"]]
    print(
        f"threads: BLAS {blas} while measuring (default {r['machine']['blas_threads_default']}), "
        f"hnswlib/ScaNN searches 1; builds use {p['build_threads']} cores"
    )
    for name, status in r["peers"].items():
        print(f"peer {name}: " + (status.get("version") or f"skipped ({status.get('skipped')})"))
    header = f"  {'method':<30} {'build s':>8} {'MiB':>7}  {'parameter':<28} {'recall':>6} {'q/s':>9} {'x single':>8} {'x batch':>8}"
    for name, d in r["datasets"].items():
        for task_name, task in d["tasks"].items():
            print(
                f"\n{name} {task_name} ({task['metric']}): {d['n_items']:,} items, "
                f"{task['queries']} queries ({task['timed_queries']} timed), "
                f"ground truth {task['ground_truth_s']} s"
            )
            print(header)
            for m in task["methods"]:
                for i, pt in enumerate(pareto(m["points"])):
                    lead = (
                        f"{m['label']:<30} {m['build_s']:>8.1f} {m['index_bytes'] / 2**20:>7.1f}"
                        if i == 0
                        else " " * 47
                    )
                    param = ", ".join(f"{k}={v}" for k, v in pt["param"].items()) or "-"
                    print(
                        f"  {lead}  {param:<28} {pt['recall_at_10']:>6.3f} "
                        f"{pt['queries_per_s']:>9,.0f} {pt['speedup_vs_single']:>7.1f}x "
                        f"{pt['speedup_vs_batched']:>7.2f}x"
                    )
    print(f"\n(curves: Pareto points; all points in ann.json) wall {r['wall_s']} s")
