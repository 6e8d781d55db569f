"""`annrec bench e2e --via gateway`: the same open-loop traffic straight to Kafka and through
`annrec gateway` (HTTP/1.1 keep-alive), side by side against one worker, in one run.

For each rate the two paths take turns, kafka, gateway, gateway, kafka (ABBA: drift on a shared
machine falls on both alike), and their latencies are pooled per path: p50/p95/p99 and the
gateway's difference. Latency is measured from each request's scheduled send (open loop, as
`bench e2e`). The gateway is its own process, as deployed; its CPU time is read from /proc for
each round, which also measures what a replica pays for replies it does not wait for: during the
Kafka rounds its bridge reads every reply of the direct traffic and drops it.

`--via` is added to `bench e2e`'s own arguments (this module wraps its registration), so
`bench e2e --via kafka` is `bench e2e` unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from adapters.topics import ensure_topics, topic_specs
from index_builder.progress import progress_bar
from index_builder.publish import BuildOptions, publish_version
from index_builder.synth import synth_factors
from schemas.errors import AnnrecError
from schemas.settings import CommonSettings, prefixed_topics
from tools import processes, services
from tools.bench import e2e
from tools.bench.cli import apply_quick
from tools.bench.machine import describe, machine_info
from tools.client import wait_for_workers

TARGET_P99_DIFF_MS = 5.0  # issue 19: through the gateway, p99 within 5 ms of straight to Kafka
WORKER = e2e.Run("1 worker", 1)
WORKER_READY_S = 900.0


def register(parser: argparse.ArgumentParser) -> None:
    e2e.register(parser)
    straight: Callable[[argparse.Namespace], int] = parser.get_default("handler")
    parser.add_argument(
        "--via",
        choices=["kafka", "gateway"],
        default="kafka",
        help="gateway: one worker, the same traffic straight to Kafka and through `annrec "
        "gateway`, side by side (default rates 500; --rounds turns each)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="--via gateway: ABBA pairs per rate")

    def run(args: argparse.Namespace) -> int:
        if args.via == "kafka":
            return straight(args)
        a = apply_quick(args)
        rates = [500] if a.rates == parser.get_default("rates") else _rates(a.rates)
        bench_via_gateway(a.out, rates, a.duration, a.items, a.max_p99_ms, a.rounds)
        return 0

    parser.set_defaults(handler=run)


def _rates(text: str) -> list[int]:
    return [int(r) for r in text.split(",")]


def bench_via_gateway(
    out: Path,
    rates: list[int],
    duration_s: float,
    n_items: int,
    max_p99_ms: float = 1000.0,
    rounds: int = 2,
    dim: int = 64,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    with (
        services.configured_or_local() as svc,
        tempfile.TemporaryDirectory(prefix="annrec-e2e-gw-") as tmp,
    ):
        storage = Path(tmp)
        factors = synth_factors(n_items, max(1000, n_items // 10), dim, seed=1)
        publish_version(factors, storage, BuildOptions())
        served = e2e.Served(svc.kafka, svc.redis_url, storage, len(factors.user_ids), max_p99_ms)
        points = _compare(served, rates, duration_s, rounds)
    results = {
        "points": points,
        "target": {"p99_diff_ms": TARGET_P99_DIFF_MS},
        "params": {
            "rates": rates,
            "duration_s": duration_s,
            "rounds": rounds,
            "n_items": n_items,
            "dim": dim,
            "n_users": served.n_users,
            "workers": 1,
            "request": "recommend user_id k=10",
            "http": "HTTP/1.1 keep-alive, httpx.AsyncClient, JSON body, POST /v1/recommend",
        },
        "command": "annrec " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
    }
    (out / "e2e_gateway.json").write_text(json.dumps(results, indent=2))
    _plot(results, out / "e2e_gateway.png")
    _print(results)
    return results


def _compare(
    served: e2e.Served, rates: list[int], duration_s: float, rounds: int
) -> list[dict[str, Any]]:
    tag = uuid.uuid4().hex[:8]
    topics = CommonSettings(**prefixed_topics(f"bench{tag}"))
    ensure_topics(served.kafka, topic_specs(topics))
    env = e2e.worker_env(served, WORKER, topics, tag)
    log = (served.storage / f"processes-{tag}.log").open("ab")
    worker = processes.start_worker(env, log)
    try:
        # A 1M version with its neighbour table took over the default 2 minutes to load on a
        # busy 2-core machine (the first 1M run stopped there).
        wait_for_workers(
            served.kafka,
            topics.topic_requests,
            topics.topic_replies,
            served.n_users,
            1,
            timeout_s=WORKER_READY_S,
        )
        with _gateway(env, log) as (base, pid):
            make = e2e.by_user_id(served.n_users)
            points = []
            for rate in progress_bar(rates, desc="kafka vs gateway", unit="rate", file=sys.stderr):
                runs: dict[str, list[dict[str, Any]]] = {"kafka": [], "gateway": []}
                pooled: dict[str, list[npt.NDArray[np.float64]]] = {"kafka": [], "gateway": []}
                for path in ["kafka", "gateway", "gateway", "kafka"] * rounds:
                    cpu_before, started = _cpu_s(pid), time.perf_counter()
                    if path == "kafka":
                        figures, lat = e2e.open_loop(
                            served.kafka, topics, rate, duration_s, make, served.max_p99_ms
                        )
                    else:
                        figures, lat = http_open_loop(
                            base, rate, duration_s, make, served.max_p99_ms
                        )
                    wall = time.perf_counter() - started
                    figures["gateway_cpu_share"] = round((_cpu_s(pid) - cpu_before) / wall, 3)
                    runs[path].append(figures)
                    pooled[path].append(lat)
                points.append(_point(rate, runs, pooled))
            return points
    finally:
        processes.stop([worker])
        log.close()


@contextmanager
def _gateway(env: dict[str, str], log: Any) -> Iterator[tuple[str, int]]:
    """`annrec gateway` in a process of its own on a free port: (base URL, pid) once healthy."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools.cli",
            "--log-level",
            "WARNING",
            "gateway",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _healthy(base):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AnnrecError(f"annrec gateway did not become healthy (see {log.name})")
            time.sleep(0.2)
        yield base, proc.pid
    finally:
        processes.stop([proc])


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_open_loop(
    base: str, rate: int, duration_s: float, make_request: e2e.MakeRequest, max_p99_ms: float
) -> tuple[dict[str, Any], npt.NDArray[np.float64]]:
    """What e2e.open_loop does, through the gateway: `rate` POSTs/s on keep-alive connections,
    each latency from its scheduled send to its response; (figures, latencies in ms)."""
    return asyncio.run(_http_load(base, rate, duration_s, make_request, max_p99_ms))


# Connections the load generator keeps open (HTTP/1.1: one request at a time on each). Each
# sender coroutine uses one; requests wait for a free sender in a queue, in schedule order, their
# latency still counted from the scheduled send (open loop, as wrk2 does). A task per request on
# one pool collapsed (thousands queued in httpcore's pool cost the client more CPU than it
# measured); and more connections cost this Python client more than they help: at 500/s on 5k
# items, p50 41 / 13.5 / 23 ms with 8 / 16 / 32 connections, 100/s p99 17 ms with 16 and
# 360-460 ms with 64 (same gateway, one after the other).
CONNECTIONS = 16


async def _http_load(
    base: str, rate: int, duration_s: float, make_request: e2e.MakeRequest, max_p99_ms: float
) -> tuple[dict[str, Any], npt.NDArray[np.float64]]:
    n = int(rate * duration_s)
    run_id = uuid.uuid4().hex[:6]
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    latencies: dict[int, float] = {}
    inside: dict[int, float] = {}  # the gateway's own time (Server-Timing): produce -> reply
    codes: dict[int, int] = {}
    due: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:

        async def one(i: int, at: float) -> None:
            request = make_request(f"{run_id}-{i}", i)
            path = "/v1/recommend" if request.kind == "recommend" else "/v1/similar-items"
            response = await http.post(
                path,
                content=request.model_dump_json(exclude_none=True),
                headers={"Content-Type": "application/json"},
            )
            codes[response.status_code] = codes.get(response.status_code, 0) + 1
            if response.status_code == 200 and i >= 0:
                latencies[i] = (time.perf_counter() - at) * 1000
                timing = response.headers.get("server-timing", "")
                inside[i] = float(timing.partition("dur=")[2] or "nan")

        async def sender() -> None:
            while (item := await due.get()) is not None:
                await one(*item)

        # Open every connection before the clock starts (not measured).
        await asyncio.gather(*(one(-1 - j, time.perf_counter()) for j in range(CONNECTIONS)))
        codes.clear()
        senders = [asyncio.ensure_future(sender()) for _ in range(CONNECTIONS)]
        start = time.perf_counter() + 0.2
        for i in range(n):
            at = start + i / rate
            if (wait := at - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            due.put_nowait((i, at))
        backlog = n - len(latencies)
        for _ in senders:
            due.put_nowait(None)
        await asyncio.wait(senders, timeout=30)
        for task in senders:
            task.cancel()
    lat = np.array([latencies[i] for i in sorted(latencies)])
    figures = e2e.point_figures(rate, n, lat, backlog, max_p99_ms)
    figures["http_codes"] = {str(c): k for c, k in sorted(codes.items())}
    own = np.array(list(inside.values()))
    figures["inside_gateway_ms"] = {
        f"p{q}": round(float(np.nanpercentile(own, q)), 2) for q in (50, 99) if len(own)
    }
    return figures, lat


def _point(
    rate: int,
    runs: dict[str, list[dict[str, Any]]],
    pooled: dict[str, list[npt.NDArray[np.float64]]],
) -> dict[str, Any]:
    """One rate: each path's pooled percentiles, the gateway minus Kafka, and every round."""
    point: dict[str, Any] = {"rate": rate, "rounds": runs}
    for path, arrays in pooled.items():
        lat = np.concatenate(arrays) if arrays else np.array([])
        point[path] = {
            "answered": len(lat),
            "sent": sum(r["sent"] for r in runs[path]),
            **{f"p{q}": round(float(np.percentile(lat, q)), 2) for q in (50, 95, 99)},
            "max": round(float(lat.max()), 2),
            "gateway_cpu_share": round(
                float(np.mean([r["gateway_cpu_share"] for r in runs[path]])), 3
            ),
        }
    # From the gateway's Server-Timing: the part of a request spent from its parse to its
    # reply (produce, Kafka, worker, reply topic); the rest is HTTP, client and server.
    point["gateway"]["inside_gateway_p50_ms"] = round(
        float(np.median([r["inside_gateway_ms"]["p50"] for r in runs["gateway"]])), 2
    )
    point["diff_ms"] = {
        q: round(point["gateway"][q] - point["kafka"][q], 2) for q in ("p50", "p95", "p99")
    }
    point["p99_within_target"] = point["diff_ms"]["p99"] <= TARGET_P99_DIFF_MS
    return point


def _print(results: dict[str, Any]) -> None:
    p = results["params"]
    print(
        f"annrec bench e2e --via gateway: recommend by user_id, k=10, {p['n_items']:,} items, "
        f"1 worker, open loop, {p['rounds']} ABBA rounds of {p['duration_s']} s per path"
    )
    print(f"machine: {describe(results['machine'])}")
    print(
        f"{'rate/s':>7} {'path':<8} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8} "
        f"{'answered':>12} {'gateway CPU':>12}"
    )
    for point in results["points"]:
        for path in ("kafka", "gateway"):
            f = point[path]
            print(
                f"{point['rate']:>7} {path:<8} {f['p50']:>8} {f['p95']:>8} {f['p99']:>8} "
                f"{f['max']:>8} {f['answered']:>5}/{f['sent']:<6} {f['gateway_cpu_share']:>11.0%}"
            )
        print(
            f"{point['rate']:>7} inside the gateway (produce -> reply), p50 of the rounds: "
            f"{point['gateway']['inside_gateway_p50_ms']} ms"
        )
        d = point["diff_ms"]
        verdict = "within" if point["p99_within_target"] else "NOT within"
        print(
            f"{point['rate']:>7} gateway - kafka: p50 {d['p50']:+.2f} ms, p95 {d['p95']:+.2f} ms, "
            f"p99 {d['p99']:+.2f} ms ({verdict} the {TARGET_P99_DIFF_MS:.0f} ms target)"
        )


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for point in results["points"]:
        for name in ("kafka", "gateway"):
            qs = [50, 95, 99]
            ax.plot(
                qs,
                [point[name][f"p{q}"] for q in qs],
                marker="o",
                label=f"{point['rate']}/s {name}",
            )
    ax.set_xlabel("percentile")
    ax.set_ylabel("request -> reply latency (ms)")
    ax.set_title("straight to Kafka vs through annrec gateway (1 worker)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.suptitle(describe(results["machine"]), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
