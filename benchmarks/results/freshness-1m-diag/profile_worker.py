"""How the runs in this folder were made (issue 16): the Kafka phase of `annrec bench freshness`
(tools.bench.freshness.freshness, its own worker, load and figures) with py-spy recording the
worker during the 20 s phase without upserts and the one with them.

    .venv/bin/pip install py-spy   # for diagnosis only, not a dependency of annrec
    flock /tmp/annrec-bench.lock nice -n 5 .venv/bin/python \
        benchmarks/results/freshness-1m-diag/profile_worker.py /tmp/v1m OUT 1000000 10000 20

/tmp/v1m: the storage `annrec bench freshness --items 1000000 --fresh 10000 --storage /tmp/v1m
--build-only` leaves. Prints the bench's freshness lines; OUT/with.txt and OUT/without.txt are
py-spy's raw (collapsed) stacks per thread.
"""

import subprocess
import sys
from pathlib import Path
from typing import Any

import tools.bench.freshness as bench
from index_builder.synth import synth_factors
from tools import processes


def follow_worker() -> dict[str, int]:
    """The bench's worker process id, under "pid" once the bench has started it (py-spy
    attaches to it)."""
    worker: dict[str, int] = {}
    start_worker = processes.start_worker

    def started(env: Any, log: Any) -> Any:
        proc = start_worker(env, log)
        worker["pid"] = proc.pid
        return proc

    bench.processes.start_worker = started
    return worker


def main() -> None:
    storage, out = Path(sys.argv[1]), Path(sys.argv[2])
    items, fresh, duration = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    out.mkdir(parents=True, exist_ok=True)
    whole = synth_factors(items + fresh, max(1000, items // 10), 64, seed=0)
    version, _ = bench.split(whole, items)
    worker, load = follow_worker(), bench._load

    def profiled(*args: Any, upserts: int, produce: bool) -> dict[str, Any]:
        if args[4] < duration:  # the warm-up
            return load(*args, upserts=upserts, produce=produce)
        name = "with" if produce else "without"
        py_spy = Path(sys.executable).parent / "py-spy"
        record = ["record", "-p", str(worker["pid"]), "-r", "50", "-d", str(int(duration) + 3)]
        raw = ["--threads", "-f", "raw", "-o", str(out / f"{name}.txt")]
        spy = subprocess.Popen(
            [str(py_spy), *record, *raw], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        result = load(*args, upserts=upserts, produce=produce)
        spy.wait()
        return result

    bench._load = profiled
    bench._print_freshness(bench.freshness(storage, version, 500, 100, duration, 0))


if __name__ == "__main__":
    main()
