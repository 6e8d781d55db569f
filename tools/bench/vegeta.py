"""vegeta (github.com/tsenart/vegeta), the open-loop HTTP load generator `bench e2e --via
gateway` sends its HTTP traffic with: found or built, run, and its results read.

Why vegeta and not Python: the Python generator this bench had (httpx on asyncio, 16
connections) could not send 500 requests/s on a 2-core machine (thousands still queued in it
when sending ended), so it measured itself. vegeta is Go: its pacer ticks on the schedule and a
tick that finds every worker busy starts one more (each worker one keep-alive connection), so a
slow answer never delays the next send: open loop, no coordinated omission (unlike wrk).

vegeta times a request from when a worker took its tick. Its sequence number gives the scheduled
send (the first send + seq / rate), so each latency here counts from the *scheduled* send, as the
Kafka path's do (tools/bench/e2e.py), and the difference, the schedule lag, is reported: its p99
near 0 is the proof the generator kept up.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from schemas.errors import AnnrecError

MODULE = "github.com/tsenart/vegeta/v12"
# Pinned: the results' CSV columns (seq, headers) and the pacing read here are this version's.
# It needs Go >= 1.22 to build (its go.mod); a newer Go builds it as well.
VERSION = "v12.13.0"
GO_FALLBACK = Path("/usr/local/go/bin/go")  # where Go's own tarball installs


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "annrec" / "bin"


def find_vegeta() -> Path:
    """vegeta on PATH, or the one built here before, or build it now with `go install` (the Go
    module proxy; about a minute); AnnrecError with the reason when none of these works."""
    on_path = shutil.which("vegeta")
    if on_path:
        return Path(on_path)
    cached = cache_dir() / f"vegeta-{VERSION}"
    if cached.exists():
        return cached
    go = shutil.which("go") or (str(GO_FALLBACK) if GO_FALLBACK.exists() else None)
    if go is None:
        raise AnnrecError(
            "the HTTP load generator vegeta is not on PATH and Go is not installed to build it: "
            f"install Go >= 1.22 (then it is built with `go install {MODULE}@{VERSION}`) or put "
            "vegeta on PATH"
        )
    with tempfile.TemporaryDirectory(prefix="annrec-vegeta-") as gobin:
        built = subprocess.run(
            [go, "install", f"{MODULE}@{VERSION}"],
            env={**os.environ, "GOBIN": gobin, "GOFLAGS": "-mod=mod"},
            capture_output=True,
            text=True,
        )
        if built.returncode != 0:
            last = (built.stderr.strip().splitlines() or ["no output"])[-1]
            raise AnnrecError(f"could not build vegeta with {go} ({MODULE}@{VERSION}): {last}")
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(gobin) / "vegeta"), cached)
    return cached


@dataclass(frozen=True)
class Target:
    url: str
    body: bytes
    method: str = "POST"


def targets_jsonl(targets: Iterable[Target]) -> str:
    """vegeta's JSON target format: one object a line, the body base64."""
    return "".join(
        json.dumps(
            {
                "method": t.method,
                "url": t.url,
                "body": base64.b64encode(t.body).decode(),
                "header": {"Content-Type": ["application/json"]},
            }
        )
        + "\n"
        for t in targets
    )


@dataclass(frozen=True)
class Hits:
    """One attack's results, in sequence order: arrays of one value per request sent."""

    seq: npt.NDArray[np.int64]
    started_ns: npt.NDArray[np.int64]  # when a worker took the request's tick (Unix ns)
    latency_ms: npt.NDArray[np.float64]  # from that start to the whole response read
    code: npt.NDArray[np.int64]  # HTTP status; 0 when no response (an error)
    server_ms: npt.NDArray[np.float64]  # the gateway's Server-Timing `gateway` dur, or nan
    handover_ms: npt.NDArray[np.float64]  # its `handover` dur (reply thread -> request), or nan
    errors: dict[str, int]  # vegeta's error text (a failed connection, a timeout) -> count

    def __len__(self) -> int:
        return len(self.seq)

    def lag_ms(self, rate: float) -> npt.NDArray[np.float64]:
        """How late each request started against its schedule: the first send + seq / rate
        (the first send is estimated as the earliest start less its place in the schedule)."""
        # In integer ns: Unix ns as float64 would round to a quarter of a microsecond.
        scheduled_ns = np.round(self.seq * (1e9 / rate)).astype(np.int64)
        offset = self.started_ns - scheduled_ns
        return np.asarray((offset - offset.min()) / 1e6, dtype=np.float64)

    def from_schedule_ms(self, rate: float) -> npt.NDArray[np.float64]:
        """Each latency counted from the request's scheduled send (lag + vegeta's latency)."""
        return self.lag_ms(rate) + self.latency_ms


def parse_results_csv(text: str) -> Hits:
    """`vegeta encode --to csv` output (timestamp ns, code, latency ns, bytes out, bytes in,
    error, body b64, attack, seq, method, url, headers b64) into Hits, sorted by seq."""
    rows = list(csv.reader(io.StringIO(text)))
    rows.sort(key=lambda r: int(r[8]))
    errors: dict[str, int] = {}
    for r in rows:
        if r[5] and r[1] in ("", "0"):
            errors[r[5]] = errors.get(r[5], 0) + 1
    timings = [_server_timing(r[11]) for r in rows]
    return Hits(
        seq=np.array([int(r[8]) for r in rows], dtype=np.int64),
        started_ns=np.array([int(r[0]) for r in rows], dtype=np.int64),
        latency_ms=np.array([int(r[2]) / 1e6 for r in rows], dtype=np.float64),
        code=np.array([int(r[1]) for r in rows], dtype=np.int64),
        server_ms=np.array([t.get("gateway", np.nan) for t in timings], dtype=np.float64),
        handover_ms=np.array([t.get("handover", np.nan) for t in timings], dtype=np.float64),
        errors=errors,
    )


def _server_timing(headers_b64: str) -> dict[str, float]:
    """The durations (ms) of a `Server-Timing: gateway;dur=3.1, handover;dur=0.12` header in
    vegeta's encoded headers, by metric name."""
    out: dict[str, float] = {}
    for line in base64.b64decode(headers_b64).decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() != "server-timing":
            continue
        for metric in value.split(","):
            label, _, params = metric.strip().partition(";")
            dur = params.partition("dur=")[2].split(";")[0].strip()
            if label and dur:
                out[label] = float(dur)
    return out


def attack(
    vegeta: Path,
    targets: list[Target],
    rate: int,
    duration_s: float,
    workdir: Path,
    env: Mapping[str, str] | None = None,
) -> Hits:
    """`rate` requests/s for `duration_s` over HTTP/1.1 keep-alive, the targets taken in turn;
    blocks until every response is in (or its 30 s timeout)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "targets.jsonl").write_text(targets_jsonl(targets))
    results = workdir / "results.bin"
    common = {"env": {**os.environ, **(env or {})}, "capture_output": True, "text": True}
    ran = subprocess.run(
        [
            str(vegeta),
            "attack",
            "-format=json",
            f"-targets={workdir / 'targets.jsonl'}",
            f"-rate={rate}/1s",
            f"-duration={duration_s}s",
            "-timeout=30s",
            "-max-body=0",  # the code and Server-Timing are read; bodies are not kept
            f"-output={results}",
        ],
        **common,  # type: ignore[call-overload]
    )
    if ran.returncode != 0:
        raise AnnrecError(f"vegeta attack failed: {ran.stderr.strip()[-300:]}")
    encoded = subprocess.run(
        [str(vegeta), "encode", "--to", "csv", str(results)],
        **common,  # type: ignore[call-overload]
    )
    if encoded.returncode != 0:
        raise AnnrecError(f"vegeta encode failed: {encoded.stderr.strip()[-300:]}")
    return parse_results_csv(encoded.stdout)
