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
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from index_builder.progress import progress_bar
from schemas.errors import AnnrecError
from schemas.settings import CommonSettings
from tools import processes, services
from tools.bench import e2e, open_loop, vegeta
from tools.bench.cli import apply_quick, kept_storage
from tools.bench.machine import describe
from tools.bench.plots import saved_figure
from tools.bench.results import write_results
from tools.bench.traffic import MakeRequest

TARGET_P99_DIFF_MS = 5.0  # issue 19: through the gateway, p99 within 5 ms of straight to Kafka
WORKER = e2e.Run("1 worker", 1)
WORKER_READY_S = 900.0
# The waiting-requests check (issue 19): a round in which every 10th request times out.
TIMEOUT_EVERY = 10


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
        if args.via == "kafka" or args.build_only:  # the same catalogue either way
            return straight(args)
        a = apply_quick(args)
        rates = [500] if a.rates == parser.get_default("rates") else _rates(a.rates)
        bench_via_gateway(
            a.out, rates, a.duration, a.items, a.max_p99_ms, a.rounds, storage=kept_storage(a)
        )
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
    storage: Path | None = None,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    load_generator = vegeta.find_vegeta()  # before a long build: fails in seconds if it cannot
    with (
        services.configured_or_local() as svc,
        tempfile.TemporaryDirectory(prefix="annrec-e2e-gw-") as tmp,
    ):
        where = storage or Path(tmp)
        version = e2e.catalogue(where, n_items, dim)
        n_users = e2e.bench_users(n_items)
        served = e2e.Served(svc.kafka, svc.redis_url, where, n_users, max_p99_ms)
        points, timeouts = _compare(served, rates, duration_s, rounds, load_generator)
    results = {
        "points": points,
        "tenth_time_out": timeouts,
        "target": {"p99_diff_ms": TARGET_P99_DIFF_MS, "waiting_after_timeouts": 0},
        "params": {
            "rates": rates,
            "duration_s": duration_s,
            "rounds": rounds,
            "n_items": n_items,
            "dim": dim,
            "n_users": served.n_users,
            "version": version,
            "workers": 1,
            "request": "recommend user_id k=10",
            "http": f"HTTP/1.1 keep-alive, vegeta {vegeta.VERSION} (open loop), JSON body, "
            "POST /v1/recommend",
            "kafka": "Python producer (linger.ms 1) + reply-topic consumer, open loop",
        },
    }
    return write_results(out, results, "e2e_gateway.json", "e2e_gateway.png", _plot, _print)


def _compare(
    served: e2e.Served, rates: list[int], duration_s: float, rounds: int, load_generator: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each rate's ABBA rounds, then one gateway round at the last rate in which every tenth
    request times out: (the points, that round's figures with the waiting gauge after it)."""
    # A 1M version with its neighbour table took over the default 2 minutes to load on a busy
    # 2-core machine (the first 1M run stopped there).
    with e2e.started_workers(served, WORKER, ready_s=WORKER_READY_S) as worker:
        topics = worker.topics
        with _gateway(worker.env, worker.log, load_generator) as gw:
            make = e2e.by_user_id(served.n_users)
            points = []
            for rate in progress_bar(rates, desc="kafka vs gateway", unit="rate", file=sys.stderr):
                runs: dict[str, list[dict[str, Any]]] = {"kafka": [], "gateway": []}
                pooled: dict[str, list[npt.NDArray[np.float64]]] = {"kafka": [], "gateway": []}
                for path in ["kafka", "gateway", "gateway", "kafka"] * rounds:
                    figures, lat = _round(served, topics, gw, path, rate, duration_s, make)
                    runs[path].append(figures)
                    pooled[path].append(lat)
                points.append(_point(rate, runs, pooled))
            timeouts, _ = _round(
                served, topics, gw, "gateway", rates[-1], duration_s, make, TIMEOUT_EVERY
            )
            timeouts["after"] = waiting_requests(gw.base)
            return points, timeouts


def _round(
    served: e2e.Served,
    topics: CommonSettings,
    gw: GatewayProcess,
    path: str,
    rate: int,
    duration_s: float,
    make: MakeRequest,
    timeout_every: int = 0,
) -> tuple[dict[str, Any], npt.NDArray[np.float64]]:
    """One path at one rate: its figures (with the gateway's CPU and the load average) and
    latencies."""
    cpu_before, started = _cpu_s(gw.pid), time.perf_counter()
    load_before = os.getloadavg()[0]
    if path == "kafka":
        figures, lat = open_loop.open_loop(
            served.kafka, topics, rate, duration_s, make, served.max_p99_ms
        )
    else:
        figures, lat = http_open_loop(gw, rate, duration_s, make, served.max_p99_ms, timeout_every)
    wall = time.perf_counter() - started
    cpu = _cpu_s(gw.pid) - cpu_before
    figures["gateway_cpu_share"] = round(cpu / wall, 3)
    figures["gateway_cpu_ms_per_request"] = round(cpu * 1000 / max(figures["sent"], 1), 3)
    figures["load_average_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return figures, lat


@dataclass(frozen=True)
class GatewayProcess:
    base: str  # http://127.0.0.1:<port>
    pid: int
    vegeta: Path  # the load generator's binary


@contextmanager
def _gateway(env: dict[str, str], log: Any, load_generator: Path) -> Iterator[GatewayProcess]:
    """`annrec gateway` in a process of its own on a free port, once healthy."""
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
        yield GatewayProcess(base, proc.pid, load_generator)
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
    gw: GatewayProcess,
    rate: int,
    duration_s: float,
    make_request: MakeRequest,
    max_p99_ms: float,
    timeout_every: int = 0,
) -> tuple[dict[str, Any], npt.NDArray[np.float64]]:
    """What open_loop.open_loop does, through the gateway with vegeta (tools/bench/vegeta.py):
    `rate` POSTs/s on keep-alive connections, each latency from its scheduled send to its response;
    (figures, latencies in ms of the 200s). timeout_every n: every n-th request carries
    deadline_ms 1, less than any Kafka round trip, so the gateway answers it 504 (the
    waiting-requests gauge is read after the run: every waiter must be gone)."""
    n = int(rate * duration_s)
    run_id = uuid.uuid4().hex[:6]
    targets = []
    for i in range(n):
        request = make_request(f"{run_id}-{i}", i)
        if timeout_every and i % timeout_every == 0:
            request = request.model_copy(update={"deadline_ms": 1})
        path = "/v1/recommend" if request.kind == "recommend" else "/v1/similar-items"
        body = request.model_dump_json(exclude_none=True).encode()
        targets.append(vegeta.Target(f"{gw.base}{path}", body))
    with tempfile.TemporaryDirectory(prefix="annrec-vegeta-run-") as tmp:
        hits = vegeta.attack(gw.vegeta, targets, rate, duration_s, Path(tmp))
    ok = hits.code == 200
    lat = hits.from_schedule_ms(rate)[ok]
    # Not answered: no response at all, or the gateway's own refusals (503 busy, 504 timeout).
    backlog = n - int(ok.sum()) - (int((hits.code == 504).sum()) if timeout_every else 0)
    figures = open_loop.point_figures(rate, n, lat, backlog, max_p99_ms)
    if timeout_every:  # the 504s were asked for: sustained when every other request got a 200
        p99 = figures["latency_ms"].get("p99", float("inf"))
        answered = int(ok.sum()) + int((hits.code == 504).sum())
        figures["sustained"] = answered == n and backlog <= rate and p99 <= max_p99_ms
    codes, counts = np.unique(hits.code, return_counts=True)
    figures["http_codes"] = {str(c): int(k) for c, k in zip(codes, counts, strict=True)}
    figures["errors"] = hits.errors
    lag = hits.lag_ms(rate)
    figures["schedule_lag_ms"] = {
        "p50": round(float(np.percentile(lag, 50)), 2),
        "p99": round(float(np.percentile(lag, 99)), 2),
        "max": round(float(lag.max()), 2),
    }
    for name, values in (("inside_gateway_ms", hits.server_ms), ("handover_ms", hits.handover_ms)):
        own = values[ok]
        figures[name] = {
            f"p{q}": round(float(np.nanpercentile(own, q)), 2) for q in (50, 99) if len(own)
        }
    return figures, lat


def waiting_requests(base: str) -> dict[str, float]:
    """The gateway's waiting-requests gauge and timeouts counter, read from its /metrics."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    wanted = ("annrec_gateway_waiting_requests", "annrec_gateway_timeouts_total")
    return {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in text.splitlines())
        if name in wanted
    }


PERCENTILES = (50, 95, 99, 99.9)


def _pct_key(q: float) -> str:
    return f"p{q:g}"


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
            **{_pct_key(q): round(float(np.percentile(lat, q)), 2) for q in PERCENTILES},
            "max": round(float(lat.max()), 2),
            "gateway_cpu_share": round(
                float(np.mean([r["gateway_cpu_share"] for r in runs[path]])), 3
            ),
            "gateway_cpu_ms_per_request": round(
                float(np.mean([r["gateway_cpu_ms_per_request"] for r in runs[path]])), 3
            ),
            "load_average_1m": [
                min(r["load_average_1m"][0] for r in runs[path]),
                max(r["load_average_1m"][1] for r in runs[path]),
            ],
            # How far one round's p99 is from another's on the same path: the noise a
            # difference between the paths has to stand out of.
            "round_p99_ms": [
                min(r["latency_ms"]["p99"] for r in runs[path]),
                max(r["latency_ms"]["p99"] for r in runs[path]),
            ],
        }
    gw = point["gateway"]
    # From the gateway's Server-Timing: the part of a request spent from its parse to its
    # reply (produce, Kafka, worker, reply topic); the rest is HTTP, client and server.
    gw["inside_gateway_p50_ms"] = round(
        float(np.median([r["inside_gateway_ms"]["p50"] for r in runs["gateway"]])), 2
    )
    # The gateway's own hop (reply thread -> the waiting request), the worst round's.
    gw["handover_ms"] = {
        q: max(r["handover_ms"][q] for r in runs["gateway"]) for q in ("p50", "p99")
    }
    # The load generator kept to its schedule: the worst round's lag percentiles.
    gw["schedule_lag_ms"] = {
        q: max(r["schedule_lag_ms"][q] for r in runs["gateway"]) for q in ("p50", "p99", "max")
    }
    point["diff_ms"] = {k: round(gw[k] - point["kafka"][k], 2) for k in map(_pct_key, PERCENTILES)}
    point["p99_within_target"] = point["diff_ms"]["p99"] <= TARGET_P99_DIFF_MS
    return point


def _print(results: dict[str, Any]) -> None:
    p = results["params"]
    print(
        f"annrec bench e2e --via gateway: recommend by user_id, k=10, {p['n_items']:,} items, "
        f"1 worker, open loop, {p['rounds']} ABBA rounds of {p['duration_s']} s per path; "
        f"HTTP: {p['http']}"
    )
    print(f"machine: {describe(results['machine'])}")
    print(
        f"{'rate/s':>7} {'path':<8} {'p50':>8} {'p95':>8} {'p99':>8} {'p99.9':>8} {'max':>8} "
        f"{'answered':>12} {'gateway CPU':>12} {'ms CPU/req':>10} {'load avg':>10}"
    )
    for point in results["points"]:
        for path in ("kafka", "gateway"):
            f = point[path]
            load = "-".join(f"{x:.1f}" for x in f["load_average_1m"])
            print(
                f"{point['rate']:>7} {path:<8} {f['p50']:>8} {f['p95']:>8} {f['p99']:>8} "
                f"{f['p99.9']:>8} {f['max']:>8} {f['answered']:>5}/{f['sent']:<6} "
                f"{f['gateway_cpu_share']:>11.0%} {f['gateway_cpu_ms_per_request']:>10} "
                f"{load:>10}"
            )
        gw = point["gateway"]
        lag = gw["schedule_lag_ms"]
        print(
            f"{point['rate']:>7} inside the gateway (produce -> reply), p50 of the rounds: "
            f"{gw['inside_gateway_p50_ms']} ms, of which the hand-over from the reply thread "
            f"(worst round) p50 {gw['handover_ms']['p50']} ms, p99 {gw['handover_ms']['p99']} ms"
        )
        print(
            f"{point['rate']:>7} vegeta's lag behind its schedule (worst round): "
            f"p50 {lag['p50']} ms, p99 {lag['p99']} ms, max {lag['max']} ms"
        )
        k_lo, k_hi = point["kafka"]["round_p99_ms"]
        g_lo, g_hi = gw["round_p99_ms"]
        print(
            f"{point['rate']:>7} p99 of single rounds (the noise): kafka {k_lo}-{k_hi} ms, "
            f"gateway {g_lo}-{g_hi} ms"
        )
        d = point["diff_ms"]
        verdict = "within" if point["p99_within_target"] else "NOT within"
        print(
            f"{point['rate']:>7} gateway - kafka: p50 {d['p50']:+.2f} ms, p95 {d['p95']:+.2f} ms, "
            f"p99 {d['p99']:+.2f} ms, p99.9 {d['p99.9']:+.2f} ms ({verdict} the "
            f"{TARGET_P99_DIFF_MS:.0f} ms p99 target)"
        )
    t = results["tenth_time_out"]
    after = t["after"]
    print(
        f"{t['rate']:>7} gateway, every {TIMEOUT_EVERY}th request deadline_ms 1: HTTP codes "
        f"{t['http_codes']}; after the run: "
        f"{after.get('annrec_gateway_waiting_requests', float('nan')):.0f} waiting requests "
        f"(target 0), {after.get('annrec_gateway_timeouts_total', float('nan')):.0f} timeouts "
        "counted by the gateway since it started"
    )


def _plot(results: dict[str, Any], path: Path) -> None:
    with saved_figure(path, results["machine"], figsize=(8, 4.5)) as ax:
        for point in results["points"]:
            for name in ("kafka", "gateway"):
                ax.plot(
                    [str(q) for q in PERCENTILES],
                    [point[name][_pct_key(q)] for q in PERCENTILES],
                    marker="o",
                    label=f"{point['rate']}/s {name}",
                )
        ax.set_xlabel("percentile")
        ax.set_ylabel("request -> reply latency (ms)")
        ax.set_title("straight to Kafka vs through annrec gateway (1 worker)")
        ax.grid(True, alpha=0.3)
        ax.legend()
