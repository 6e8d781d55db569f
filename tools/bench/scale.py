"""`annrec bench scale`: what a version costs from 100k to 10M items, and where one machine stops.

Per catalogue size (seeded synthetic factors, `--dim` 64, a user per 10 items):

1. **build**: the default build (`annrec build --factors F --storage S --no-announce`'s options),
   resumable, in a child process (tools/bench/scale_build.py): its wall time, its peak
   resident memory (the child's own VmHWM) and each phase's wall time, CPU time and peak as
   the build logs it when the phase ends. While it runs, the machine's available memory is
   watched: below `--min-free-gib` the build is stopped and the size recorded as where this
   machine stops, with the reason;
2. **size on disk** per file of the version;
3. **a worker's memory and both queries** (tools/bench/scale_probe.py, a child process): loaded as
   a worker loads it, its resident and mapped memory; recall@10 and time of both kinds through
   worker.answer.answer against the exact scan of the same requests in the same run;
4. **through Kafka** (real broker and Redis): one default worker on the version; per kind, a
   short open-loop rate search (doubling, then one step between the last rate that held and the
   first that did not) for the highest rate with every reply back and p99 <= `--p99-ms` (25);
   the worker's own CPU time (/proc/<pid>/stat) over each rate gives core-ms per request; the
   latency distribution at the highest rate that held is kept for the fan-out simulation. An
   echo worker (the Kafka hop without computing) runs the same search at every size, and once
   per run a rate of ECHO_RATE for the fan-out's merger hop. With `--live-recall both`, a
   worker with its live-recall sampler off runs both kinds' searches too.

Each size is written to `<out>/size-<n>.json` as soon as it is measured (a run that stops at a
size keeps the ones before); while a size runs, `<out>/running-<n>.json` says where it is (for a
build, the phases finished with their figures), so a run killed from outside leaves that. With
`--work` each size's factors, version and logs stay in `<work>/n<n>/` and the same command
continues a stopped run: the factors and a published version are reused (stages.json), and a
stopped build continues after the phases it finished (index_builder/resume.py). The summary
(`scale.json`, `scale.png`, the printed table, growth exponents, the fan-out simulation) is made
from every size file in `<out>`, so 3M and 10M run by hand later (`--sizes 3000000`) join the
same curves. `--summary-only` redraws it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from adapters.topics import ensure_topics, topic_specs
from index_builder.progress import progress_bar
from index_builder.synth import write_synth_factors
from schemas.events import RecommendRequest, SimilarItemsRequest
from schemas.layout import read_latest, version_dir
from schemas.manifest import MANIFEST_NAME, Manifest
from schemas.settings import CommonSettings, prefixed_topics
from tools import processes, services
from tools.bench import fanout
from tools.bench.cli import add_quick, apply_quick
from tools.bench.e2e import Run, Served, worker_env
from tools.bench.machine import git_commit, machine_info
from tools.bench.open_loop import LoadClient
from tools.bench.procstat import PeakWatch, cpu_seconds
from tools.bench.scale_report import NO_LIVE_RECALL, size_file, summarize
from tools.bench.traffic import MakeRequest
from tools.client import wait_for_workers
from worker.parse import AnyRequest

log = structlog.get_logger(__name__)

SIZES = "100000,300000,1000000,3000000,10000000"
QUICK = {
    "sizes": "5000,15000",
    "queries": 20,
    "rate_s": 1.0,
    "start_rate": 100,
    "max_rate": 200,
    # CI checks that every stage runs and every point is measured, not where the rate lands:
    # one try per rate and no search below the first (on a machine at load 15 every rate
    # failed: 100, 50 and 25/s twice each, ~10 s per kind and size, 40 of the run's 150 s).
    "min_rate": 100,
    "tries": 1,
}
KINDS = ("recommend", "similar_items")
ECHO_RATE = 500  # the hop's distribution: an echo worker at a rate it holds easily


def register(parser: argparse.ArgumentParser) -> None:
    add_quick(parser, QUICK)
    parser.add_argument("--sizes", default=SIZES, help="catalogue sizes, comma list")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=200, help="probe requests of each kind")
    parser.add_argument("--p99-ms", type=float, default=25.0, help="the rate search's p99 bound")
    parser.add_argument("--rate-s", type=float, default=3.0, help="seconds per rate")
    parser.add_argument("--start-rate", type=int, default=100, help="first rate of the search")
    parser.add_argument("--max-rate", type=int, default=6400, help="the search stops here")
    parser.add_argument(
        "--min-rate", type=int, default=25, help="when the first rate fails, halve down to this"
    )
    parser.add_argument(
        "--tries", type=int, default=2, help="a rate that fails is tried this many times"
    )
    parser.add_argument(
        "--min-free-gib",
        type=float,
        default=1.5,
        help="stop a build when the machine's available memory falls below this",
    )
    parser.add_argument(
        "--work",
        type=Path,
        help="where factors and versions go while measured (default: the system's temp dir); "
        "10M x 64 needs about 15 GB",
    )
    parser.add_argument(
        "--lock",
        type=Path,
        help="hold this lock file (flock) through each size's Kafka stage: on a machine "
        "shared with other benchmarks (/tmp/annrec-bench.lock) the rate search waits for "
        "theirs instead of measuring beside them; the builds, hours long at 10M, do not hold it",
    )
    parser.add_argument(
        "--neighbours",
        type=int,
        help="the builds' neighbour table width M (default: the build's; 0: no table, similar "
        "items from the angular index); give such runs their own --out",
    )
    parser.add_argument(
        "--live-recall",
        choices=("on", "both"),
        default="on",
        help="both: each kind's search again by a worker with live recall off "
        "(ANNREC_SHADOW_FRACTION=0), side by side: what its exact scans cost the p99",
    )
    parser.add_argument("--summary-only", action="store_true", help="redraw from <out>/size-*.json")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    a = apply_quick(args)
    if not a.summary_only:
        sizes = [int(s) for s in a.sizes.split(",")]
        limits = Limits(
            a.p99_ms,
            a.rate_s,
            a.start_rate,
            a.max_rate,
            a.min_free_gib,
            lock=a.lock,
            min_rate=a.min_rate,
            tries=a.tries,
            neighbours=a.neighbours,
            without_live_recall_too=a.live_recall == "both",
        )
        bench_scale(a.out, sizes, a.dim, a.queries, limits, a.work)
    summarize(a.out)
    return 0


@dataclass(frozen=True)
class Limits:
    p99_ms: float
    rate_s: float
    start_rate: int
    max_rate: int
    min_free_gib: float
    lock: Path | None = None
    min_rate: int = 25
    tries: int = 2
    neighbours: int | None = None  # None: the build's default
    without_live_recall_too: bool = False


def bench_scale(
    out: Path, sizes: list[int], dim: int, queries: int, limits: Limits, work: Path | None
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(progress_bar(sizes, desc="scale", unit="size", file=sys.stderr)):
        status = RunningStatus(running_file(out, n), n)
        result = {
            "n_items": n,
            "dim": dim,
            **_measure_size(n, dim, queries, limits, work, i == 0, status),
            **({} if limits.neighbours is None else {"neighbours": limits.neighbours}),
            **_provenance(),
        }
        size_file(out, n).write_text(json.dumps(result, indent=2))
        status.path.unlink(missing_ok=True)  # superseded by the size's own file
        if "stopped" in result:
            log.warning("scale_stopped", n_items=n, reason=result["stopped"])
            break  # a larger catalogue stops there too


def _provenance() -> dict[str, Any]:
    return {
        "machine": machine_info(),
        "command": "annrec " + " ".join(sys.argv[1:]),
        "commit": git_commit(),
    }


def running_file(out: Path, n_items: int) -> Path:
    return out / f"running-{n_items}.json"


class RunningStatus:
    """`<out>/running-<n>.json`: where a size's measurement is, rewritten at every stage and
    every POLL_S of a build (its phases finished so far with their wall time, CPU time and
    peak memory, the phase running, the child's peak, the machine's lowest available memory).
    A run killed from outside (the machine's OOM killer, the end of a session) has no chance to
    write its size file: this one then says where and after how long it stopped."""

    POLL_S = 30.0

    def __init__(self, path: Path, n_items: int) -> None:
        self.path, self.n_items = path, n_items
        self.started = time.time()
        self.fields: dict[str, Any] = {}

    def update(self, **fields: Any) -> None:
        self.fields.update(fields)
        status = {
            "n_items": self.n_items,
            "started_at": _utc(self.started),
            "updated_at": _utc(time.time()),
            "elapsed_s": round(time.time() - self.started),
            "load_average": _load_average(),
            **self.fields,
            **_provenance(),
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=2))
        tmp.replace(self.path)


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@contextlib.contextmanager
def _held(lock: Path | None) -> Iterator[float]:
    """An exclusive flock on `lock` (None: no lock) for the block; yields the seconds waited."""
    if lock is None:
        yield 0.0
        return
    started = time.perf_counter()
    with lock.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
        yield round(time.perf_counter() - started, 1)


@contextlib.contextmanager
def _size_dir(
    work: Path | None, n: int, neighbours: int | None = None
) -> Iterator[tuple[Path, bool]]:
    """Where a size's factors, version and logs go, and whether it is kept: under `--work` a
    directory per size that outlives the run (a 10M size takes hours: a later run resumes from
    what it holds), else a temporary one."""
    if work is None:
        with tempfile.TemporaryDirectory(prefix="annrec-scale-") as tmp:
            yield Path(tmp), False
    else:
        directory = work / (f"n{n}" if neighbours is None else f"n{n}-m{neighbours}")
        directory.mkdir(parents=True, exist_ok=True)
        yield directory, True


def _measure_size(
    n: int,
    dim: int,
    queries: int,
    limits: Limits,
    work: Path | None,
    with_echo: bool,
    status: RunningStatus,
) -> dict[str, Any]:
    with _size_dir(work, n, limits.neighbours) as (tmp, kept):
        done = _Stages(tmp / "stages.json" if kept else None)
        factors, storage = tmp / "factors.npz", tmp / "storage"
        result: dict[str, Any] = {}
        if "factors" not in done:
            status.update(stage="factors")
            started = time.perf_counter()
            partial = tmp / "factors-partial.npz"
            write_synth_factors(partial, n, max(1000, n // 10), dim, seed=0)
            partial.replace(factors)
            done.record("factors", {"factors_s": round(time.perf_counter() - started, 1)})
        result.update(done["factors"])
        if "build" not in done or read_latest(storage) is None:
            status.update(stage="build")
            build = _build(factors, storage, tmp / "build.log", limits, status, limits.neighbours)
            if "failure" in build:
                done.append("build_attempts", build)  # a later run continues it
                return {**result, "build": build, "stopped": f"build: {build['failure']}"}
            done.record("build", combine_attempts(build, done.list("build_attempts")))
        else:
            result["resumed"] = "factors and build from " + str(tmp)
        result["build"] = done["build"]
        result["load_average"] = {"build": result["build"].pop("load_average")}
        if not kept:
            factors.unlink()  # the build read it; 10M x 64 is 2.6 GB of disk
        version = read_latest(storage)
        assert version is not None  # the build exited 0: it published
        directory = version_dir(storage, version)
        manifest = Manifest.model_validate_json((directory / MANIFEST_NAME).read_text())
        # A resumed build's manifest times the phases it took over as 0 s; the logs have them.
        from_logs = {k: v["seconds"] for k, v in result["build"].get("phases_done", {}).items()}
        result["build"]["phases_s"] = {**manifest.build.timings_s, **from_logs}
        result["quality"] = _served_quality(manifest)
        result["disk_mib"] = {
            p.name: round(p.stat().st_size / 2**20, 1) for p in sorted(directory.iterdir())
        }
        status.update(stage="worker probe", build=result["build"])
        probe = run_child(
            ["-m", "tools.bench.scale_probe", str(storage), version, "--queries", str(queries)],
            tmp / "probe.log",
            limits.min_free_gib,
            module=True,
        )
        if probe.failure is not None:
            return {**result, "stopped": f"worker probe: {probe.failure}"}
        result["worker"] = {**json.loads(probe.stdout), "peak_rss_mib": probe.peak_rss_mib}
        result["load_average"]["probe"] = _load_average()
        status.update(worker=result["worker"])
        # Kafka and Redis only now: a local stack is not held through a build of hours.
        status.update(stage="kafka: waiting for the lock" if limits.lock else "kafka")
        with _held(limits.lock) as waited_s, services.configured_or_local() as svc:
            status.update(stage="kafka", lock_waited_s=waited_s)
            result["kafka"] = _through_kafka(svc, storage, manifest, limits, with_echo)
            result["kafka"]["lock_waited_s"] = waited_s
        result["load_average"]["kafka"] = _load_average()
        return result


def _build(
    factors: Path,
    storage: Path,
    log_path: Path,
    limits: Limits,
    status: RunningStatus,
    neighbours: int | None = None,
) -> dict[str, Any]:
    """The default build of `factors` into `storage`, resumable (tools/bench/scale_build.py):
    its summary, the phases finished (from its logs, this attempt's and those of earlier
    attempts it continued from: build.log.1, .2, ...) and the phase it was in."""
    earlier = _keep_earlier_log(log_path)

    def report(child: PeakWatch) -> None:
        status.update(
            build_running={
                "peak_rss_mib": child.peak_mib,
                "machine_available_gib_lowest": round(child.lowest_gib, 2),
                **build_phases([*earlier, log_path]),
            }
        )

    width = [] if neighbours is None else ["--neighbours", str(neighbours)]
    build = run_child(
        ["-m", "tools.bench.scale_build", str(factors), str(storage), *width],
        log_path,
        limits.min_free_gib,
        module=True,
        on_poll=report,
    )
    return {
        **build.summary(),
        "load_average": _load_average(),
        "attempt": len(earlier) + 1,
        **build_phases([*earlier, log_path]),
    }


def combine_attempts(last: dict[str, Any], earlier: list[dict[str, Any]]) -> dict[str, Any]:
    """A build finished after `earlier` stopped attempts: its wall time as if it had run in one
    go (every finished phase once, from the attempt that finished it, plus the last attempt's
    time outside the phases it ran), its peak over all attempts, and each attempt's wall."""
    if not earlier:
        return last
    phases = last["phases_done"]
    this_attempt = sum(v["seconds"] for v in phases.values() if v["attempt"] == last["attempt"])
    work = sum(v["seconds"] for v in phases.values()) + last["wall_s"] - this_attempt
    return {
        **last,
        "wall_s": round(work, 1),
        "peak_rss_mib": max(a["peak_rss_mib"] for a in [*earlier, last]),
        "attempts_wall_s": [a["wall_s"] for a in [*earlier, last]],
    }


def _keep_earlier_log(log_path: Path) -> list[Path]:
    """An earlier attempt's log moved to the next free build.log.<k>; every earlier log, oldest
    first."""
    if log_path.exists():
        k = 1
        while log_path.with_name(f"{log_path.name}.{k}").exists():
            k += 1
        log_path.rename(log_path.with_name(f"{log_path.name}.{k}"))
    numbered = log_path.parent.glob(f"{log_path.name}.*")
    return sorted(numbered, key=lambda p: int(p.suffix[1:]))


def build_phases(log_paths: list[Path]) -> dict[str, Any]:
    """From builds' JSON log lines (attempts in order, each continuing the one before): each
    finished phase's wall time, CPU time (every thread: above the wall time, it ran on more
    than one core), the process's peak memory at its end and the attempt that ran it, and the
    phase started but not finished (where a stopped build was)."""
    finished: dict[str, dict[str, Any]] = {}
    running = None
    for attempt, log_path in enumerate(log_paths, start=1):
        with contextlib.suppress(OSError):
            running = _read_phases(log_path, attempt, finished)
    return {"phases_done": finished, "phase_running": running}


def _read_phases(log_path: Path, attempt: int, finished: dict[str, dict[str, Any]]) -> str | None:
    running = None
    for line in log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("event") == "build_phase_started":
                running = event["phase"]
                finished.pop(running, None)  # an earlier attempt's, being done again
            elif event.get("event") == "build_phase_done":
                keep = ("seconds", "cpu_s", "peak_rss_mib")
                finished[event["phase"]] = {k: event[k] for k in keep} | {"attempt": attempt}
                running = None
    return running


class _Stages:
    """What a kept size directory has finished (stages.json): the factors written and the
    build published, with their figures, so a later run starts after them. Without a file
    (a temporary directory) nothing is remembered."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.done: dict[str, Any] = (
            json.loads(path.read_text()) if path is not None and path.exists() else {}
        )

    def __contains__(self, stage: str) -> bool:
        return stage in self.done

    def __getitem__(self, stage: str) -> dict[str, Any]:
        return dict(self.done[stage])

    def list(self, stage: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.done.get(stage, [])
        return entries

    def record(self, stage: str, figures: Any) -> None:
        self.done[stage] = figures
        if self.path is not None:
            self.path.write_text(json.dumps(self.done, indent=2))

    def append(self, stage: str, figures: dict[str, Any]) -> None:
        self.record(stage, [*self.list(stage), figures])


def _load_average() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages: on 2 cores shared with other work, what
    a figure was measured beside (above 2, someone else was computing too)."""
    return [round(x, 2) for x in os.getloadavg()]


def _served_quality(manifest: Manifest) -> dict[str, Any] | None:
    """What the build's own quality report chose per kind (its curves stay in the manifest)."""
    if manifest.quality is None:
        return None
    keep = ("strategy", "search_k", "exact_items", "bound_factor", "recall_at_k", "queries_per_s")
    return {
        kind: {k: v for k, v in getattr(manifest.quality, kind).model_dump().items() if k in keep}
        | {"exact_queries_per_s": getattr(manifest.quality, kind).brute_force_queries_per_s}
        for kind in KINDS
    }


@dataclass
class ChildRun:
    wall_s: float
    peak_rss_mib: int
    returncode: int
    failure: str | None  # None: exited 0
    stdout: str

    def summary(self) -> dict[str, Any]:
        return {
            "wall_s": round(self.wall_s, 1),
            "peak_rss_mib": self.peak_rss_mib,
            "returncode": self.returncode,
            **({"failure": self.failure} if self.failure else {}),
        }


def run_child(
    args: list[str],
    log_path: Path,
    min_free_gib: float,
    module: bool = False,
    on_poll: Callable[[PeakWatch], None] | None = None,
) -> ChildRun:
    """`annrec <args>` (or `python <args>` with `module`) as a child: wall time, its own peak RSS
    and why it failed (exit code or signal with the log's last lines, or the memory watch
    stopping it). The peak is the child's VmHWM, read while it runs: getrusage's ru_maxrss of a
    child starts from this process's own resident size at the fork (Linux carries the old
    address space's high-water mark across exec), which a benchmark holding a catalogue exceeds."""
    command = [sys.executable, *args] if module else [sys.executable, "-m", "tools.cli", *args]
    env = {**os.environ, "ANNREC_PROGRESS": "off"}
    started = time.perf_counter()
    with log_path.open("wb") as err, tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        watch = PeakWatch(proc.pid, min_free_gib, on_poll)
        watch.start()
        _, status = os.waitpid(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        watch.stop()
        wall = time.perf_counter() - started
        out.seek(0)
        stdout = out.read().decode()
    failure = None
    if watch.reason is not None:
        failure = f"{watch.reason}; last lines: {_tail(log_path)}"
    elif proc.returncode != 0:
        how = (
            f"killed by {signal.Signals(-proc.returncode).name}"
            if proc.returncode < 0
            else f"exit code {proc.returncode}"
        )
        failure = f"{how}; last lines: {_tail(log_path)}"
    return ChildRun(wall, watch.peak_mib, proc.returncode, failure, stdout)


def _tail(path: Path, lines: int = 3) -> str:
    text = path.read_text(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:])


def _through_kafka(
    svc: services.Endpoints, storage: Path, manifest: Manifest, limits: Limits, with_echo: bool
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    requests = {
        "recommend": _requests("recommend", manifest.n_users),
        "similar_items": _requests("similar_items", manifest.n_items),
    }
    with _Worker(svc, storage, manifest.n_users) as worker:
        result["idle_core_ms_per_s"] = worker.idle_core_ms_per_s()
        for kind in KINDS:
            result[kind] = _rate_search(worker, requests[kind], limits)
    if limits.without_live_recall_too:
        # The live-recall sampler answers a sample again by exact scans (worker/shadow.py): at
        # 1M one takes ~30 ms of BLAS on a 2-core machine that also runs the broker.
        with _Worker(svc, storage, manifest.n_users, live_recall=False) as worker:
            result[NO_LIVE_RECALL] = {
                kind: _rate_search(worker, requests[kind], limits) for kind in KINDS
            }
    with _Worker(svc, storage, manifest.n_users, echo=True) as echo:
        # The same search with a worker that computes nothing, at every size: the rate the Kafka
        # hop, the load generator and this machine allow at the bound, beside which a worker's
        # rate says how much of its ceiling is the search and how much is everything else.
        result["echo_search"] = _rate_search(echo, requests["recommend"], limits)
        if with_echo:
            point = echo.run(ECHO_RATE, limits.rate_s, requests["recommend"], limits.p99_ms)
            result["echo"] = point
    return result


def _requests(kind: str, n_subjects: int) -> MakeRequest:
    """Requests about subjects spread over the catalogue (a stride prime to its size)."""

    def make(rid: str, i: int) -> AnyRequest:
        subject = (i * 7919) % n_subjects
        if kind == "similar_items":
            return SimilarItemsRequest(request_id=rid, item_id=f"i{subject}", k=10)
        return RecommendRequest(request_id=rid, user_id=f"u{subject}", k=10)

    return make


class _Worker:
    """One `annrec worker` (default settings) on fresh topics, serving `storage`'s LATEST."""

    def __init__(
        self,
        svc: services.Endpoints,
        storage: Path,
        n_users: int,
        echo: bool = False,
        live_recall: bool = True,
    ) -> None:
        tag = uuid.uuid4().hex[:8]
        self.kafka = svc.kafka
        self.topics = CommonSettings(**prefixed_topics(f"scale{tag}"))
        self.n_users = n_users
        served = Served(svc.kafka, svc.redis_url, storage, n_users, 0.0)
        self._env = worker_env(
            served, Run("1 worker", 1, echo=echo, live_recall=live_recall), self.topics, tag
        )
        self._log = storage / f"worker-{tag}.log"

    def __enter__(self) -> _Worker:
        ensure_topics(self.kafka, topic_specs(self.topics))
        with self._log.open("ab") as log_file:
            self.proc = processes.start_worker(self._env, log_file)
        try:
            # A 10M version takes minutes to verify and fault in before the worker answers.
            wait_for_workers(
                self.kafka,
                self.topics.topic_requests,
                self.topics.topic_replies,
                self.n_users,
                1,
                timeout_s=1800,
            )
        except BaseException:
            processes.stop([self.proc])
            raise
        time.sleep(1.0)  # let the assignment settle before measuring
        self._client = LoadClient(self.kafka, self.topics)  # one for the search: load.py
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()
        processes.stop([self.proc])

    def idle_core_ms_per_s(self, seconds: float = 2.0) -> float:
        """The worker's CPU time with no request: polling, heartbeats, the index watcher."""
        before = cpu_seconds(self.proc.pid)
        time.sleep(seconds)
        return round((cpu_seconds(self.proc.pid) - before) * 1000 / seconds, 2)

    def run(
        self, rate: int, seconds: float, make_request: MakeRequest, p99_ms: float
    ) -> dict[str, Any]:
        """One open-loop rate: its figures, the worker's core-ms per request, and the latency
        distribution (quantiles, for the fan-out simulation)."""
        cpu: list[float] = [cpu_seconds(self.proc.pid)]
        point, latencies = self._client.run(
            rate,
            seconds,
            make_request,
            p99_ms,
            on_sent=lambda: cpu.append(cpu_seconds(self.proc.pid)),
        )
        answered = max(1, point["answered"])
        point["core_ms_per_request"] = round((cpu[1] - cpu[0]) * 1000 / answered, 3)
        if len(latencies):
            point["latency_quantiles_ms"] = fanout.quantiles(latencies)
        return point


def _rate_search(worker: _Worker, make_request: MakeRequest, limits: Limits) -> dict[str, Any]:
    """Doubling from start_rate until a rate fails (a reply missing, a backlog, or p99 over the
    bound) or max_rate, then one rate halfway between the last that held and the first that did
    not. Returns every point and the highest rate that held."""
    points: list[dict[str, Any]] = []
    # Not measured: the first requests of a kind meet cold caches and a fresh batch size.
    worker.run(limits.start_rate, limits.rate_s, make_request, limits.p99_ms)

    def attempt(rate: int) -> bool:
        # A rate that fails is tried again (--tries) before it counts: on a shared machine one
        # burst of someone else's work is enough to push a p99 over 25 ms.
        for _ in range(limits.tries):
            points.append(worker.run(rate, limits.rate_s, make_request, limits.p99_ms))
            if points[-1]["sustained"]:
                return True
        return False

    rate, held, failed = limits.start_rate, 0, 0
    while rate <= limits.max_rate:
        if not attempt(rate):
            failed = rate
            break
        held, rate = rate, rate * 2
    while not held and failed // 2 >= limits.min_rate:  # not even the first: look lower
        if attempt(failed // 2):
            held = failed // 2
        else:
            failed //= 2
    if held and failed and attempt(mid := (held + failed) // 2):
        held = mid
    best = next((p for p in points if p["rate"] == held and p["sustained"]), None)
    # The fan-out simulation's per-shard distribution: at the highest rate that held, else at
    # the lowest rate tried (every request of it answered, the bound missed).
    lowest = min(points, key=lambda p: p["rate"])
    return {
        "points": [{k: v for k, v in p.items() if k != "latency_quantiles_ms"} for p in points],
        "max_rate_at_p99": held,
        "p99_bound_ms": limits.p99_ms,
        "at_max_rate": best,
        "latency_reference": best or lowest,
    }
