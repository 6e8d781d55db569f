"""Where a worker's serving thread is in the first seconds of upserts (issue 16; BENCHMARKS.md,
"Items added between builds": a run's first upserts wait longer than the rest). The Kafka part of
`annrec bench freshness` (its own worker, 500 requests/s, 100 upserts/s, 12 s per phase), with
py-spy sampling the worker at 500 Hz without pausing it (--nonblocking: a pausing sampler made
the worker fall seconds behind) for the first 4 s of the phase with upserts. Prints the bench's
freshness lines, the first 40 upserts' delays, and the serving thread's stretches of more than
30 ms inside the reply producer's flush (py-spy's samples are in time order).

    .venv/bin/pip install py-spy   # for diagnosis only, not a dependency of annrec
    flock /tmp/annrec-bench.lock nice -n 5 .venv/bin/python \
        benchmarks/results/freshness-1m-diag/first_upserts.py /tmp/v1m OUT

/tmp/v1m: the storage `annrec bench freshness --items 1000000 --fresh 10000 --storage /tmp/v1m
--build-only` leaves. OUT/first.json: py-spy's speedscope profile, one per thread.
"""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from profile_worker import follow_worker  # this folder's: the bench's worker, for py-spy

import tools.bench.freshness as bench
from index_builder.synth import synth_factors

PHASE_S = 12.0


def _flush_stretches(profile: Path, longer_than_s: float = 0.03) -> list[tuple[float, float]]:
    """(start, length) in seconds of the main thread's runs of samples inside a flush."""
    data = json.loads(profile.read_text())
    frames = data["shared"]["frames"]
    main = next(p for p in data["profiles"] if "MainThread" in p["name"])
    runs, start, at = [], None, 0.0
    for stack, weight in zip(main["samples"], main["weights"], strict=True):
        if any("flush" in frames[i]["name"] for i in stack[-2:]):
            start = at if start is None else start
        elif start is not None:
            runs.append((start, at - start))
            start = None
        at += weight
    return [(round(s, 3), round(n, 3)) for s, n in runs if n > longer_than_s]


def main() -> None:
    storage, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    whole = synth_factors(1_010_000, 101_000, 64, seed=0)
    version, _ = bench.split(whole, 1_000_000)
    worker, load = follow_worker(), bench._load

    def profiled(*args: Any, upserts: int, produce: bool) -> dict[str, Any]:
        if not produce or args[4] < PHASE_S:  # the warm-up, the phase without upserts
            return load(*args, upserts=upserts, produce=produce)
        py_spy = Path(sys.executable).parent / "py-spy"
        record = ["record", "-p", str(worker["pid"]), "-r", "500", "-d", "4", "--nonblocking"]
        spy = subprocess.Popen(
            [
                str(py_spy),
                *record,
                "--threads",
                "--idle",
                "-f",
                "speedscope",
                "-o",
                str(out / "first.json"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        result = load(*args, upserts=upserts, produce=produce)
        spy.wait()
        return result

    bench._load = profiled
    figures = bench.freshness(storage, version, 500, 100, PHASE_S, 0)
    bench._print_freshness(figures)
    print("first 40 upserts, ms:", [round(d) for d in figures["delays_ms"][:40]])
    print(
        "serving thread in the producer's flush > 30 ms (start s, length s):",
        _flush_stretches(out / "first.json"),
    )


if __name__ == "__main__":
    main()
