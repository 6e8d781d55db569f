"""`annrec bench load`: what loading the next version costs the requests served beside it.

A worker loads a new version (sha256 of every file, mmap + prefault, checks, id lookups, the
Gramian) on a background thread while its serving thread keeps answering (worker/index_store.py).
Both share one interpreter: whatever the loader does in Python, holding the GIL, the serving
thread waits for. This benchmark serves `recommend` queries in one thread, as the worker does
(query_engine/plan.py, the version's own plan), one every PACE_S plus its service time, and records
each query's latency:

- `idle`: nothing else running;
- `loading`: while another thread loads the same version from disk, as IndexStore does;
- `swap`: the serving thread's own pause at each swap (closing the old version).

Side by side in one run, repeated `loads` times; JSON, a Markdown table on stdout and a PNG
timeline. It needs no Kafka or Redis: the end-to-end view of the same cost is `bench e2e`'s
"1 worker + 3 swaps" run.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from index_builder.publish import BuildOptions, publish_version
from index_builder.synth import synth_factors
from schemas.layout import read_latest
from tools.bench.cli import add_quick, apply_quick
from tools.bench.machine import describe
from tools.bench.plots import saved_figure
from tools.bench.results import write_results
from worker.index_store import LoadedVersion, load_version, lower_loader_priority

K = 10
PACE_S = 0.001  # between two queries: a worker busy about half of the time at 1M
IDLE_S = 3.0  # measured before the first load and between loads

QUICK = {"items": 20_000, "loads": 1}


def register(parser: argparse.ArgumentParser) -> None:
    add_quick(parser, QUICK)
    parser.add_argument("--items", type=int, default=1_000_000, help="synthetic catalogue size")
    parser.add_argument("--loads", type=int, default=3, help="versions loaded, one after another")
    parser.add_argument(
        "--storage", type=Path, help="load this storage's LATEST instead of a synthetic version"
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    a = apply_quick(args)
    bench_load(a.out, a.items, loads=a.loads, storage=a.storage)
    return 0


def bench_load(
    out: Path, n_items: int, dim: int = 64, loads: int = 3, storage: Path | None = None
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        if storage is None:
            storage = Path(tmp)
            factors = synth_factors(n_items, max(1000, n_items // 10), dim, seed=1)
            publish_version(factors, storage, BuildOptions())
        version = read_latest(storage)
        if version is None:
            raise SystemExit(f"no version in {storage}: nothing to load")
        with threadpool_limits(1, user_api="blas"):  # as the worker serves (one core per query)
            result = _measure(storage, version, loads)
    result["params"] = {"storage": str(storage), "version": version, "loads": loads, "k": K}
    return write_results(
        out, result, "load.json", "load_latency.png", _plot, lambda r: print(markdown(r))
    )


def _measure(storage: Path, version: str, loads: int) -> dict[str, Any]:
    serving = load_version(storage, version, warm=True)
    rng = np.random.default_rng(0)
    users = np.asarray(serving.user_factors[rng.choice(len(serving.user_factors), 1000)])
    start = time.perf_counter()
    samples: list[tuple[float, float, str]] = []  # (seconds since start, latency s, phase)
    spans: list[tuple[float, float]] = []
    swaps_ms: list[float] = []
    asked = 0

    def serve(phase: str, busy: Callable[[], bool]) -> None:
        nonlocal asked
        while busy():
            t0 = time.perf_counter()
            serving.search.recommend(users[asked % len(users)], K)
            samples.append((t0 - start, time.perf_counter() - t0, phase))
            asked += 1
            time.sleep(PACE_S)

    def idle() -> None:
        until = time.perf_counter() + IDLE_S
        serve("idle", lambda: time.perf_counter() < until)

    idle()
    for _ in range(loads):
        loaded: list[LoadedVersion] = []
        loader = threading.Thread(target=_load_into, args=(loaded, storage, version))
        began = time.perf_counter()
        loader.start()
        serve("loading", loader.is_alive)
        spans.append((began - start, time.perf_counter() - start))
        if not loaded:
            raise SystemExit(f"loading {version} failed: see the traceback above")
        t0 = time.perf_counter()
        old, serving = serving, loaded[0]
        old.close()
        swaps_ms.append((time.perf_counter() - t0) * 1000)
        idle()
    serving.close()
    phases = {
        phase: _percentiles([lat for _, lat, p in samples if p == phase])
        for phase in ("idle", "loading")
    }
    return {
        "phases": phases,
        "load_seconds": [b - a for a, b in spans],
        "swap_pause_ms": swaps_ms,
        "p99_ratio_loading_over_idle": phases["loading"]["p99_ms"] / phases["idle"]["p99_ms"],
        "spans": spans,
        "samples": [(round(t, 4), round(lat * 1000, 3)) for t, lat, _ in samples],
    }


def _load_into(loaded: list[LoadedVersion], storage: Path, version: str) -> None:
    lower_loader_priority()  # as IndexStore's watcher thread
    loaded.append(load_version(storage, version, warm=True))  # as IndexStore.check_latest


def _percentiles(latencies_s: list[float]) -> dict[str, float]:
    ms = np.asarray(latencies_s) * 1000
    return {
        "queries": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


def markdown(result: dict[str, Any]) -> str:
    p = result["params"]
    lines = [
        f"`{result['command']}`: {describe(result['machine'])}",
        f"version {p['version']}, {p['loads']} loads, recommend k={p['k']}, one thread serving",
        "",
        "| phase | queries | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
    ]
    for phase, s in result["phases"].items():
        lines.append(
            f"| {phase} | {s['queries']} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | "
            f"{s['max_ms']:.1f} |"
        )
    loads = ", ".join(f"{s:.2f}" for s in result["load_seconds"])
    swaps = ", ".join(f"{s:.1f}" for s in result["swap_pause_ms"])
    lines += [
        "",
        f"p99 while loading / p99 idle: {result['p99_ratio_loading_over_idle']:.2f}x; "
        f"load seconds: {loads}; serving-thread pause at each swap (ms): {swaps}",
    ]
    return "\n".join(lines)


def _plot(result: dict[str, Any], path: Path) -> None:
    with saved_figure(path, None, figsize=(9, 4), dpi=120) as ax:
        for i, (a, b) in enumerate(result["spans"]):
            ax.axvspan(
                a, b, color="tab:orange", alpha=0.2, label="loading a version" if i == 0 else None
            )
        t, ms = zip(*result["samples"], strict=True) if result["samples"] else ((), ())
        ax.plot(t, ms, ".", markersize=2, color="tab:blue", label="query latency")
        ax.set_yscale("log")
        ax.set_xlabel("seconds")
        ax.set_ylabel("latency, ms (log)")
        ax.set_title("Serving latency while the next version loads (bench load)")
        ax.legend(loc="upper right")
