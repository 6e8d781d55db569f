"""Live recall: a sample of answered requests is answered again by exact scans, off the request
path, and recall@k of what users actually got is exported per kind and index version.

The builder's quality report measures recall once, on sampled queries, at build time; live
traffic may ask other things (other users, exclusions, recent items). The sampler answers: is
what we serve still as good as the manifest says? It never delays a request: `offer` only puts
into a bounded queue (a full queue drops the sample and counts it), and a background thread does
the exact work with its own BLAS call, which releases the GIL.

Releasing the GIL is not enough: an exact scan of a 1M catalogue takes ~50 ms of a core, and at
1% of 1,000 requests/s the checks took half a core of a 2-core machine from serving (1 worker at
1,000/s, 1M items: p99 2.4x that of the same worker without the sampler; BENCHMARKS.md). So the
checks get a share of one core (`cpu_share`): after a check that took t seconds, no sample is
taken for t * (1 / share - 1) seconds (skipped samples are counted). The sample rate then adapts
to the catalogue: every 1% sample on a small one, about one a second at 1M with a 5% share.
"""

from __future__ import annotations

import contextlib
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from schemas.events import Reply
from worker.answer import Policy, answer
from worker.index_store import LoadedVersion
from worker.parse import AnyRequest

log = structlog.get_logger(__name__)

# (version, kind, mean recall over the window, samples in the window) -> None, e.g. to Redis
Publish = Callable[[str, str, float, int], None]


@dataclass(frozen=True)
class Sample:
    request: AnyRequest
    reply: Reply
    version: LoadedVersion


def reply_recall(served: Reply, exact: Reply) -> float:
    """Share of the exact answer's items that the served answer holds (1.0 for empty answers)."""
    want = [i.item_id for i in exact.items]
    if not want:
        return 1.0
    got = {i.item_id for i in served.items}
    return sum(1 for i in want if i in got) / len(want)


class ShadowSampler:
    def __init__(
        self,
        registry: CollectorRegistry,
        fraction: float = 0.01,
        queue_size: int = 1000,
        window: int = 200,
        policy: Policy | None = None,
        publish: Publish | None = None,
        seed: int | None = None,
        cpu_share: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` (seconds) times the checks and the pauses after them; tests pass one they
        control, so a pause does not depend on how long a check happens to take."""
        if not 0 < cpu_share <= 1:
            raise ValueError(f"cpu_share must be in (0, 1], got {cpu_share}")
        self.fraction = fraction
        self.cpu_share = cpu_share
        self._clock = clock
        self._resume_at = 0.0  # clock time before which no sample is taken (cpu_share)
        self.window = window
        self._policy = policy or Policy()
        self._publish = publish
        self._queue: queue.Queue[Sample | None] = queue.Queue(maxsize=queue_size)
        self._rng = random.Random(seed)
        self._recalls: dict[tuple[str, str], deque[float]] = {}
        self._below: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.live_recall = Gauge(
            "annrec_live_recall",
            "Mean recall@k of served answers against exact scans, over the last window of samples",
            ["kind", "version"],
            registry=registry,
        )
        self.below_target = Gauge(
            "annrec_live_recall_below_target",
            "1 while a full window's live recall is below the manifest's target recall",
            ["kind"],
            registry=registry,
        )
        self.samples = Counter(
            "annrec_shadow_samples",
            "Answers re-checked by exact scans",
            ["kind"],
            registry=registry,
        )
        self.dropped = Counter(
            "annrec_shadow_dropped",
            "Samples dropped: the checking queue was full",
            registry=registry,
        )
        self.skipped = Counter(
            "annrec_shadow_skipped",
            "Samples not taken: the exact re-checks were using their share of a core",
            registry=registry,
        )

    def start(self) -> ShadowSampler:
        self._thread = threading.Thread(target=self._run, name="shadow-recall", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._thread is not None:
            with contextlib.suppress(queue.Full):  # a full queue: the thread is daemon anyway
                self._queue.put(None, timeout=timeout_s)
            self._thread.join(timeout_s)

    def offer(self, request: AnyRequest, reply: Reply, version: LoadedVersion) -> None:
        """Maybe take this answered request (never blocks)."""
        if (
            reply.status != "ok"
            or reply.fallback is not None
            or self._rng.random() >= self.fraction
        ):
            return
        if self._clock() < self._resume_at:
            self.skipped.inc()
            return
        try:
            self._queue.put_nowait(Sample(request, reply, version))
        except queue.Full:
            self.dropped.inc()

    def recall(self, kind: str, version: str) -> tuple[float, int] | None:
        """(mean recall, samples) of the current window, or None before any sample."""
        with self._lock:
            values = self._recalls.get((kind, version))
            return (sum(values) / len(values), len(values)) if values else None

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """True once every offered sample is checked (tests)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def _run(self) -> None:
        while True:
            sample = self._queue.get()
            try:
                if sample is None:
                    return
                started = self._clock()
                self._check(sample)
                finished = self._clock()
                self._resume_at = finished + (finished - started) * (1 / self.cpu_share - 1)
            except Exception:  # a sample that cannot be checked must not stop the sampler
                log.exception("shadow_check_failed")
            finally:
                self._queue.task_done()

    def _check(self, sample: Sample) -> None:
        v, kind = sample.version, sample.reply.kind or sample.request.kind
        exact = answer(sample.request, v, sample.reply.worker_id, self._policy, exact=True)
        recall = reply_recall(sample.reply, exact)
        with self._lock:
            values = self._recalls.setdefault((kind, v.version), deque(maxlen=self.window))
            values.append(recall)
            mean, n = sum(values) / len(values), len(values)
        self.samples.labels(kind).inc()
        self.live_recall.labels(kind, v.version).set(mean)
        self._watch_target(kind, v, mean, n)
        if self._publish is not None:
            self._publish(v.version, kind, mean, n)

    def _watch_target(self, kind: str, v: LoadedVersion, mean: float, n: int) -> None:
        quality = v.manifest.quality
        if quality is None or n < self.window:
            return
        below = mean < quality.target_recall
        self.below_target.labels(kind).set(1 if below else 0)
        if below != self._below.get(kind, False):
            self._below[kind] = below
            event = "live_recall_below_target" if below else "live_recall_recovered"
            (log.warning if below else log.info)(
                event,
                kind=kind,
                version=v.version,
                recall=round(mean, 4),
                target=quality.target_recall,
                window=n,
            )
