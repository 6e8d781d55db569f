"""`annrec bench e2e`: request -> reply latency through real Kafka, open loop, at fixed rates.

The load generator sends on a fixed schedule whatever the replies do (open loop), and measures
each latency from the request's *scheduled* send time, so a stalled system cannot hide its queue
(coordinated omission). Configurations, each on its own topics and consumer group:

- `echo`: a worker that replies without computing: the floor of Kafka + Redis + the loop;
- `1 worker`, `2 workers`: annrec workers answering `recommend` by user_id, as configured by
  default (live recall re-checks 1% of answers within 5% of a core: worker/shadow.py);
- `1 worker, no live recall`: the same with the sampler off, side by side: what it costs;
- `swaps`: 1 worker at a moderate rate while three new versions are published and announced;
- with `--guarantee exactly-once` (or `both`, side by side with at-least-once): 1 and 2 workers
  running ANNREC_PROCESSING_GUARANTEE=exactly-once, their replies read as read_committed (a
  reply counts when its transaction is committed);
- with `--mix` (and `--zipf`): traffic like a shop's (tools/bench/traffic.py: similar items,
  recommendations, filtered requests; subjects by Zipf popularity) to `echo`, `1 worker` and
  `1 worker + reply cache` (ANNREC_SERVE_FROM_CACHE: a repeated question answered from Redis),
  side by side: whether the cache pays off on that traffic.

A rate counts as sustained when every reply arrived, the backlog at the end of the sending window
was under one second's worth of requests, and p99 stayed under `--max-p99-ms`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from adapters.topics import ensure_topics, topic_specs
from index_builder.announce import announce_version
from index_builder.progress import progress_bar
from index_builder.publish import BuildOptions, publish_version
from index_builder.storage import adopt_version
from index_builder.synth import synth_attributes, synth_factors
from schemas.errors import AnnrecError
from schemas.events import RecommendRequest
from schemas.settings import CommonSettings, prefixed_topics, topic_env
from tools import processes, services
from tools.bench.cli import add_quick, add_storage, apply_quick, kept_storage, kept_version
from tools.bench.machine import describe
from tools.bench.open_loop import WARMUP_S, LoadClient
from tools.bench.plots import saved_figure
from tools.bench.results import write_results
from tools.bench.traffic import DEFAULT_MIX, MakeRequest, Mix, mixed_requests
from tools.client import wait_for_workers
from worker.parse import AnyRequest

QUICK = {"rates": "50,100", "duration": 2.0, "items": 5_000, "warmup": 0.5}


def register(parser: argparse.ArgumentParser) -> None:
    add_quick(parser, QUICK)
    parser.add_argument("--rates", default="100,200,400,800,1600", help="requests/s, comma list")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per rate")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--max-p99-ms", type=float, default=1000.0)
    parser.add_argument(
        "--guarantee",
        choices=["at-least-once", "exactly-once", "both"],
        default="at-least-once",
        help="the workers' ANNREC_PROCESSING_GUARANTEE; both: 1 and 2 workers each way, side by "
        "side (exactly-once replies are read as read_committed)",
    )
    parser.add_argument(
        "--mix",
        help=f"request kinds by share, e.g. {DEFAULT_MIX} (default: recommend by user_id only)",
    )
    parser.add_argument(
        "--zipf",
        type=float,
        default=1.0,
        help="with --mix: Zipf exponent of subject popularity (0: uniform)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=WARMUP_S,
        help="seconds of load before each configuration's first rate, at that rate, reported "
        "apart and not counted (tools/bench/open_loop.py: a fresh client's and worker's first "
        "second); --via gateway has none: each round starts its clients, as its vegeta round does",
    )
    add_storage(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    a = apply_quick(args)
    rates = [int(r) for r in a.rates.split(",")]
    try:
        mix = Mix.parse(a.mix) if a.mix else None
    except ValueError as exc:
        raise AnnrecError(str(exc)) from None
    storage = kept_storage(a)
    if a.build_only:
        assert storage is not None  # --build-only keeps what it builds
        version = catalogue(storage, a.items, attributes=mix is not None and mix.needs_attributes)
        print(f"version {version} in {storage}")
        return 0
    bench_e2e(
        a.out,
        rates,
        a.duration,
        a.items,
        max_p99_ms=a.max_p99_ms,
        guarantee=a.guarantee,
        mix=mix,
        zipf=a.zipf,
        storage=storage,
        warmup_s=a.warmup,
    )
    return 0


def bench_users(n_items: int) -> int:
    return max(1000, n_items // 10)


def catalogue(storage: Path, n_items: int, dim: int = 64, attributes: bool = False) -> str:
    """The benchmark's version in `storage` (synthetic factors, seed 1; with synthetic
    attributes when a filtered mix needs them), built unless a version of the same catalogue is
    there already: its name."""
    wanted = {"items": n_items, "users": bench_users(n_items), "dim": dim, "seed": 1}
    if attributes:  # a key only when set: catalogues kept before it existed still match
        wanted["attributes"] = 1

    def publish() -> None:
        factors = synth_factors(n_items, bench_users(n_items), dim, seed=1)
        synthetic = synth_attributes(n_items, seed=1) if attributes else None
        publish_version(factors, storage, BuildOptions(), attributes=synthetic)

    return kept_version(storage, wanted, publish)


@dataclass(frozen=True)
class Run:
    label: str
    workers: int
    echo: bool = False
    live_recall: bool = True
    exactly_once: bool = False
    reply_cache: bool = False


RUNS = (
    Run("echo", 1, echo=True),
    Run("1 worker", 1),
    Run("1 worker, no live recall", 1, live_recall=False),
    Run("2 workers", 2),
)
SWAP_RUN = Run("1 worker + 3 swaps", 1)
EXACTLY_ONCE_RUNS = (
    Run("1 worker, exactly-once", 1, exactly_once=True),
    Run("2 workers, exactly-once", 2, exactly_once=True),
)
BOTH_RUNS = (Run("1 worker", 1), EXACTLY_ONCE_RUNS[0], Run("2 workers", 2), EXACTLY_ONCE_RUNS[1])
MIX_RUNS = (
    Run("echo", 1, echo=True),
    Run("1 worker", 1),
    Run("1 worker + reply cache", 1, reply_cache=True),
)


def _runs(guarantee: str) -> tuple[Run, ...]:
    return {"at-least-once": RUNS, "exactly-once": EXACTLY_ONCE_RUNS, "both": BOTH_RUNS}[guarantee]


@dataclass(frozen=True)
class Served:
    """What every run's workers serve: the services, the storage, its users, the p99 bound."""

    kafka: dict[str, str]
    redis_url: str
    storage: Path
    n_users: int
    max_p99_ms: float
    traffic: MakeRequest | None = None  # None: recommend by user_id (by_user_id)
    warmup_s: float = WARMUP_S  # each run's load before its first rate (tools/bench/open_loop.py)


def bench_e2e(
    out: Path,
    rates: list[int],
    duration_s: float,
    n_items: int,
    dim: int = 64,
    max_p99_ms: float = 1000.0,
    swap_rate: int | None = None,
    guarantee: str = "at-least-once",
    mix: Mix | None = None,
    zipf: float = 1.0,
    storage: Path | None = None,
    warmup_s: float = WARMUP_S,
) -> dict[str, Any]:
    """`storage`: where the version is kept and found again (catalogue), else a temporary
    folder."""
    out.mkdir(parents=True, exist_ok=True)
    # The storage goes after the runs, each of which stops its workers first (_sweep).
    with (
        services.configured_or_local() as svc,
        tempfile.TemporaryDirectory(prefix="annrec-e2e-") as tmp,
    ):
        where = storage or Path(tmp)
        catalogue(where, n_items, dim, attributes=mix is not None and mix.needs_attributes)
        n_users = bench_users(n_items)
        traffic = None if mix is None else mixed_requests(mix, zipf, n_items, n_users)
        served = Served(svc.kafka, svc.redis_url, where, n_users, max_p99_ms, traffic, warmup_s)
        results: dict[str, Any] = {"runs": {}}
        for run in MIX_RUNS if mix else _runs(guarantee):
            results["runs"][run.label] = _sweep(served, run, rates, duration_s)
        if guarantee == "at-least-once" and mix is None:  # the swaps measure recommend
            rate = swap_rate or _highest(results["runs"]["1 worker"]) // 2 or rates[0]
            swaps = _swap_run(served, rate, max(duration_s, 15), n_items, dim)
            results["runs"][SWAP_RUN.label] = swaps
    results["params"] = {
        "rates": rates,
        "duration_s": duration_s,
        "n_items": n_items,
        "dim": dim,
        "n_users": served.n_users,
        "max_p99_ms": max_p99_ms,
        "warmup_s": warmup_s,
        "guarantee": guarantee,
        "request": "recommend user_id k=10"
        if mix is None
        else f"mix {mix.label()}, zipf {zipf}, k=10",
    }
    return write_results(out, results, "e2e.json", "e2e_latency.png", _plot, _print)


def _swap_run(
    served: Served, rate: int, duration_s: float, n_items: int, dim: int
) -> list[dict[str, Any]]:
    """One worker at `rate` while three new versions are moved in and announced. They are built
    before the run: what is measured is the workers' cost of loading, verifying, warming and
    swapping, not a build competing for the same 2 cores."""
    with tempfile.TemporaryDirectory(prefix="annrec-e2e-next-") as tmp:
        side = Path(tmp)
        upcoming = [
            publish_version(synth_factors(n_items, served.n_users, dim, seed=100 + i), side).version
            for i in range(3)
        ]
        return _sweep(served, SWAP_RUN, [rate], duration_s, (side, upcoming))


def _sweep(
    served: Served,
    run: Run,
    rates: list[int],
    duration_s: float,
    upcoming: tuple[Path, list[str]] | None = None,
) -> list[dict[str, Any]]:
    """The run's workers on fresh topics, then each rate in turn until one is not sustained."""
    with (
        started_workers(served, run) as workers,
        LoadClient(
            served.kafka, workers.topics, read_committed=run.exactly_once, warmup_s=served.warmup_s
        ) as client,
    ):
        topics = workers.topics
        points = []
        for n, rate in enumerate(progress_bar(rates, desc=run.label, unit="rate", file=sys.stderr)):
            swapper = None
            if upcoming is not None:
                swapper = threading.Thread(
                    target=_publish_during,
                    args=(
                        upcoming,
                        duration_s,
                        served.warmup_s if n == 0 else 0.0,  # the client's first run warms up
                        served.storage,
                        served.kafka,
                        topics.topic_index_versions,
                    ),
                )
                swapper.start()
            point, _ = client.run(
                rate, duration_s, served.traffic or by_user_id(served.n_users), served.max_p99_ms
            )
            if swapper is not None:
                swapper.join()
            points.append(point)
            if not point["sustained"] and rate != rates[-1]:
                break  # higher rates only pile up more backlog
        return points


def worker_env(served: Served, run: Run, topics: CommonSettings, tag: str) -> dict[str, str]:
    return {
        **os.environ,
        "ANNREC_KAFKA_BOOTSTRAP": served.kafka["bootstrap.servers"],
        "ANNREC_REDIS_URL": served.redis_url,
        "ANNREC_STORAGE": str(served.storage),
        **topic_env(topics),
        "ANNREC_GROUP_ID": f"bench{tag}",
        "ANNREC_METRICS_PORT": "-1",
        "ANNREC_ECHO": "true" if run.echo else "false",
        **({} if run.live_recall else {"ANNREC_SHADOW_FRACTION": "0"}),
        "ANNREC_PROCESSING_GUARANTEE": "exactly-once" if run.exactly_once else "at-least-once",
        "ANNREC_SERVE_FROM_CACHE": "true" if run.reply_cache else "false",
    }


@dataclass(frozen=True)
class StartedWorkers:
    """Workers started by started_workers, answering."""

    topics: CommonSettings  # their own, as is their consumer group
    env: dict[str, str]  # their environment (a process beside them, e.g. a gateway, shares it)
    log: IO[bytes]  # where their warnings and errors go (in the served storage)
    procs: list[subprocess.Popen[bytes]]


@contextmanager
def started_workers(
    served: Served,
    run: Run,
    extra_env: Mapping[str, str] | None = None,
    ready_s: float = 120.0,
) -> Iterator[StartedWorkers]:
    """The run's workers (worker_env, then `extra_env` over it) on topics and a consumer group
    of their own, once every one has answered (within `ready_s`: a 1M version takes minutes to
    load on a busy machine) and a second more for the last assignment to settle, so no rebalance
    lands in a measurement; stopped on leaving."""
    tag = uuid.uuid4().hex[:8]
    topics = CommonSettings(**prefixed_topics(f"bench{tag}"))
    ensure_topics(served.kafka, topic_specs(topics))
    env = {**worker_env(served, run, topics, tag), **(extra_env or {})}
    log = (served.storage / f"workers-{tag}.log").open("ab")
    procs = [processes.start_worker(env, log) for _ in range(run.workers)]
    try:
        wait_for_workers(
            served.kafka,
            topics.topic_requests,
            topics.topic_replies,
            served.n_users,
            run.workers,
            timeout_s=ready_s,
        )
        time.sleep(1.0)
        yield StartedWorkers(topics, env, log, procs)
    finally:
        processes.stop(procs)
        log.close()


def by_user_id(n_users: int) -> MakeRequest:
    """The benchmark's default request: recommend for users spread over the partitions."""

    def make(rid: str, i: int) -> AnyRequest:
        return RecommendRequest(request_id=rid, user_id=f"u{(i * 7919) % n_users}", k=10)

    return make


def _publish_during(
    upcoming: tuple[Path, list[str]],
    duration_s: float,
    after_s: float,
    storage: Path,
    kafka: dict[str, str],
    topic: str,
) -> None:
    """Move prebuilt versions into the served storage, move LATEST, announce: evenly spaced over
    the measured window that begins `after_s` from now."""
    side, versions = upcoming
    time.sleep(after_s)
    for version in versions:
        time.sleep(duration_s / (len(versions) + 1))
        announce_version(kafka, topic, adopt_version(storage, side, version))


def _highest(points: list[dict[str, Any]]) -> int:
    return max((p["rate"] for p in points if p["sustained"]), default=0)


def _print(results: dict[str, Any]) -> None:
    print(
        f"annrec bench e2e: {results['params']['request']}, open loop, latency from scheduled send"
    )
    print(f"machine: {describe(results['machine'])}")
    print(
        f"{'configuration':<26} {'rate/s':>7} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}  "
        f"{'answered':>9} sustained"
    )
    for label, points in results["runs"].items():
        for p in points:
            lat = p["latency_ms"]
            print(
                f"{label:<26} {p['rate']:>7} {lat.get('p50', '-'):>8} {lat.get('p95', '-'):>8} "
                f"{lat.get('p99', '-'):>8} {lat.get('max', '-'):>8}  "
                f"{p['answered']:>4}/{p['sent']:<4} {'yes' if p['sustained'] else 'no'}"
            )
    for label, points in results["runs"].items():
        print(f"highest sustained rate, {label}: {_highest(points)}/s")
    for label, points in results["runs"].items():
        if warm := points[0].get("warmup") if points else None:
            lat = warm["latency_ms"]
            print(
                f"warm-up before {label}'s first rate (not counted): {warm['seconds']} s, "
                f"p50 {lat.get('p50', '-')} p99 {lat.get('p99', '-')} ms, "
                f"{warm['answered']}/{warm['sent']} answered"
            )


def _plot(results: dict[str, Any], path: Path) -> None:
    with saved_figure(path, results["machine"], figsize=(15, 4.5), ncols=3, sharey=True) as axes:
        for ax, q in zip(axes, ("p50", "p95", "p99"), strict=True):
            for label, points in results["runs"].items():
                xs = [p["rate"] for p in points if q in p["latency_ms"]]
                ys = [p["latency_ms"][q] for p in points if q in p["latency_ms"]]
                ax.plot(xs, ys, marker="o", label=label)
            ax.set_title(f"{q} request -> reply latency")
            ax.set_xlabel("offered rate (requests/s)")
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
        axes[0].set_ylabel("ms")
        axes[0].legend()
