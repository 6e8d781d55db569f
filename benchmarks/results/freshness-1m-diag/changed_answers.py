"""How many similar-items answers a fresh segment changes, and what those cost (issue 16;
BENCHMARKS.md, "Items added between builds"): the 1M version of `annrec bench freshness` and its
10,000 fresh items (the bench's seeded split), 3,000 version items asked without and with the
segment; then, on the answers that differ, answer() timed on each, side by side.

    flock /tmp/annrec-bench.lock nice -n 5 .venv/bin/python \
        benchmarks/results/freshness-1m-diag/changed_answers.py /tmp/v1m 1000000 10000

/tmp/v1m: the storage `annrec bench freshness --items 1000000 --fresh 10000 --storage /tmp/v1m
--build-only` leaves.
"""

import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from index_builder.synth import synth_factors
from schemas.events import SimilarItemsRequest
from tools.bench.freshness import split
from worker.answer import answer
from worker.fresh import apply_event
from worker.index_store import LoadedVersion, load_version


def _p50s_us(
    requests: list[SimilarItemsRequest], plain: LoadedVersion, served: LoadedVersion
) -> tuple[float, float, float]:
    """answer() on each request without and with the segment, side by side (the two in
    alternating order, 7 rounds), so that the machine's slower and faster phases fall on both:
    the medians over requests of each request's median time, and of its difference."""
    taken: dict[str, list[list[int]]] = {
        name: [[] for _ in requests] for name in ("plain", "served")
    }
    for rnd in range(7):
        for j, request in enumerate(requests):
            order = [("plain", plain), ("served", served)]
            for name, version in order if (rnd + j) % 2 else order[::-1]:
                started = time.perf_counter_ns()
                answer(request, version, "diag")
                taken[name][j].append(time.perf_counter_ns() - started)
    without = np.median(taken["plain"], axis=1) / 1e3
    with_ = np.median(taken["served"], axis=1) / 1e3
    return (
        round(float(np.median(without)), 1),
        round(float(np.median(with_)), 1),
        round(float(np.median(with_ - without)), 1),
    )


def main() -> None:
    storage, n_items, n_fresh = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    name = (storage / "LATEST").read_text().strip()
    whole = synth_factors(n_items + n_fresh, max(1000, n_items // 10), 64, seed=0)
    factors, fresh = split(whole, n_items)
    plain, served = load_version(storage, name), load_version(storage, name)
    for event in fresh:
        apply_event(served, event)
    served.fresh.settle(np.inf)
    rows = np.random.default_rng(0).choice(n_items, 3000, replace=False)
    asked = [SimilarItemsRequest(request_id="d", item_id=str(factors.item_ids[r])) for r in rows]
    with threadpool_limits(1, user_api="blas"):
        changed = [
            r
            for r in asked
            if [i.item_id for i in answer(r, served, "d").items]
            != [i.item_id for i in answer(r, plain, "d").items]
        ]
        print(f"answers changed by the segment: {len(changed)} of {len(asked)}")
        without, with_, extra = _p50s_us(changed, plain, served)
        print(f"on those, answer() p50: {without} us without the segment, {with_} us with it")
        print(f"  (side by side, each request's median of 7; its extra cost's median {extra} us)")


if __name__ == "__main__":
    main()
