"""`annrec bench models`: one worker serving two models against one serving one, side by side.

Two synthetic catalogues of --items items each (the model `default` and the model `second`,
other seeds) are built once into --work and kept (a later run reuses them: at 1M a build takes
minutes). Then, for --rounds rounds, in alternating order (ABBA: the machine's load drifts), on
fresh topics each:

- `one model`: a worker with ANNREC_MODELS=["default"]: every request for `default`;
- `two models`: a worker holding both: the same rate, half the requests for each model.

Each phase: the worker started and warmed up (it answered on every partition), --rate
requests/s for --duration s open loop (tools/bench/e2e.py: latency from the scheduled send, so a
queue cannot hide), then the worker's resident memory from /proc: RssFile (pages of the versions'
mapped files, shared through the page cache with every process mapping them) and RssAnon (its
own heap). Figures: p50/p95/p99 per phase and round, the ratio two/one of each round's p99 and
their median, the load average before and after each phase. The issue's target: p99 of two
models within 1.25x of one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from index_builder.publish import BuildOptions, publish_version
from index_builder.synth import synth_factors
from schemas.events import RecommendRequest
from schemas.layout import model_root, read_latest
from schemas.manifest import MANIFEST_NAME, Manifest
from tools import services
from tools.bench.cli import add_quick, apply_quick
from tools.bench.e2e import Run, Served, started_workers
from tools.bench.machine import describe
from tools.bench.open_loop import LoadClient
from tools.bench.plots import saved_figure
from tools.bench.results import write_results
from tools.bench.traffic import MakeRequest
from worker.parse import AnyRequest

# --quick builds into <out>/storage (what the quick test checks is left there), not --work.
QUICK = {"items": 3_000, "rate": 100, "duration": 3.0, "rounds": 1, "work": None}
MODELS = ("default", "second")
PHASES = {"one model": MODELS[:1], "two models": MODELS}


def register(parser: argparse.ArgumentParser) -> None:
    add_quick(parser, QUICK)
    parser.add_argument("--items", type=int, default=1_000_000, help="items per model")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--rate", type=int, default=500, help="requests/s, both phases")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=2, help="each phase runs once per round")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path.home() / ".cache" / "annrec" / "bench-models",
        help="where the two models are built once and kept",
    )
    parser.add_argument(
        "--neighbours",
        type=int,
        default=0,
        help="the builds' neighbour table (0: none; the traffic is recommend only, which the "
        "table does not serve, and at 1M it is most of a build's time)",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    a = apply_quick(args)
    work = a.work or a.out / "storage"
    bench_models(a.out, work, a.items, a.dim, a.rate, a.duration, a.rounds, a.neighbours)
    return 0


def bench_models(
    out: Path,
    work: Path,
    n_items: int,
    dim: int,
    rate: int,
    duration_s: float,
    rounds: int,
    neighbours: int = 0,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    storage = work / f"{n_items}x{dim}-m{neighbours}"
    n_users = max(1000, n_items // 10)
    built = {
        m: _built(storage, m, n_items, n_users, dim, seed, neighbours)
        for seed, m in enumerate(MODELS)
    }
    results: dict[str, Any] = {"rounds": []}
    with services.configured_or_local() as svc:
        served = Served(svc.kafka, svc.redis_url, storage, n_users, max_p99_ms=1e9)
        for r in range(rounds):
            order = list(PHASES) if r % 2 == 0 else list(PHASES)[::-1]
            figures = {label: _phase(served, PHASES[label], rate, duration_s) for label in order}
            ratio = (
                figures["two models"]["latency_ms"]["p99"]
                / figures["one model"]["latency_ms"]["p99"]
            )
            results["rounds"].append(
                {"order": order, "phases": figures, "p99_ratio": round(ratio, 3)}
            )
            print(f"round {r + 1}: p99 two/one {ratio:.2f}x", file=sys.stderr)
    ratios = [r["p99_ratio"] for r in results["rounds"]]
    results.update(
        {
            "p99_ratio_median": round(float(np.median(ratios)), 3),
            "target_p99_ratio": 1.25,
            "models": built,
            "params": {
                "n_items": n_items,
                "dim": dim,
                "n_users": n_users,
                "rate": rate,
                "duration_s": duration_s,
                "rounds": rounds,
                "neighbours": neighbours,
                "request": "recommend user_id k=10; two models: alternating default/second",
            },
        }
    )
    return write_results(out, results, "models.json", "models.png", _plot, _print)


def _built(
    storage: Path, model: str, n_items: int, n_users: int, dim: int, seed: int, neighbours: int
) -> dict[str, Any]:
    """The model's version (built now unless an earlier run left it): its name and size."""
    root = model_root(storage, model)
    version = read_latest(root)
    if version is None:
        factors = synth_factors(n_items, n_users, dim, seed=10 + seed)
        version = publish_version(factors, root, BuildOptions(neighbours=neighbours)).version
    manifest = Manifest.model_validate_json(
        (root / "versions" / version / MANIFEST_NAME).read_text()
    )
    size = sum(f.size for f in manifest.files.values())
    return {"version": version, "mapped_mib": round(size / 2**20, 1)}


def _requests(models: tuple[str, ...], n_users: int) -> MakeRequest:
    def make(rid: str, i: int) -> AnyRequest:
        user = f"u{(i * 7919) % n_users}"
        return RecommendRequest(request_id=rid, user_id=user, k=10, model=models[i % len(models)])

    return make


def _phase(served: Served, models: tuple[str, ...], rate: int, duration_s: float) -> dict[str, Any]:
    """One worker serving `models`, `rate` requests/s spread over them; its figures."""
    holding = {"ANNREC_MODELS": json.dumps(models)}
    with (
        started_workers(served, Run("models", 1), holding, ready_s=600) as worker,
        LoadClient(served.kafka, worker.topics) as client,
    ):
        load_before = os.getloadavg()
        point, _ = client.run(rate, duration_s, _requests(models, served.n_users), 1e9)
        memory = _resident_mib(worker.procs[0].pid)
    return {
        **point,
        "models": list(models),
        "resident_mib": memory,
        "load_average": {
            "before": [round(x, 1) for x in load_before],
            "after": [round(x, 1) for x in os.getloadavg()],
        },
    }


def _resident_mib(pid: int) -> dict[str, float]:
    """VmRSS and its parts (kB in /proc/<pid>/status), in MiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            found[key] = round(int(value.split()[0]) / 1024, 1)
    return found


def _print(results: dict[str, Any]) -> None:
    p = results["params"]
    print(
        f"annrec bench models: {p['n_items']:,} items x {p['dim']} per model, {p['rate']} "
        f"requests/s for {p['duration_s']:g} s per phase, {p['rounds']} round(s), open loop"
    )
    print(f"machine: {describe(results['machine'])}")
    for model, b in results["models"].items():
        print(f"model {model}: version {b['version']}, maps {b['mapped_mib']} MiB")
    print(
        f"{'round':>5} {'phase':<11} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8} {'answered':>11} "
        f"{'RSS MiB':>8} {'file':>8} {'anon':>8}  load before/after"
    )
    for i, r in enumerate(results["rounds"], 1):
        for label in r["order"]:
            f = r["phases"][label]
            lat, mem = f["latency_ms"], f["resident_mib"]
            print(
                f"{i:>5} {label:<11} {lat.get('p50', '-'):>8} {lat.get('p95', '-'):>8} "
                f"{lat.get('p99', '-'):>8} {lat.get('max', '-'):>8} "
                f"{f['answered']:>5}/{f['sent']:<5} {mem.get('VmRSS', '-'):>8} "
                f"{mem.get('RssFile', '-'):>8} {mem.get('RssAnon', '-'):>8}  "
                f"{f['load_average']['before'][0]} / {f['load_average']['after'][0]}"
            )
        print(f"{i:>5} p99 two models / one model: {r['p99_ratio']:.2f}x")
    print(
        f"median p99 ratio {results['p99_ratio_median']:.2f}x "
        f"(target <= {results['target_p99_ratio']}x)"
    )


def _plot(results: dict[str, Any], path: Path) -> None:
    quantiles = ("p50", "p95", "p99")
    p = results["params"]
    with saved_figure(path, results["machine"], figsize=(8, 4.5), machine_fontsize=7) as ax:
        for label in PHASES:
            for i, r in enumerate(results["rounds"], 1):
                lat = r["phases"][label]["latency_ms"]
                ax.plot(
                    quantiles,
                    [lat.get(q) for q in quantiles],
                    marker="o",
                    label=f"{label}, round {i}",
                )
        ax.set_ylabel("request -> reply latency, ms")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"{p['n_items']:,} items per model, {p['rate']} requests/s, one worker")
