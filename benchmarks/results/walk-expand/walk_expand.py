"""The table search above its width expanding 1 or 4 items at a time (issue 14; BENCHMARKS.md,
item -> items): best_first at k=100 and a beam of 200 from 300 sampled items of a version, the
two settings in alternating passes over all 300 (so each query's rows are cold again between
its repeats, as a served query's are), each query's median of 3 per setting; recall@100 of the
exactly rescored beam against an exact scan.

    flock /tmp/annrec-bench.lock nice -n 5 .venv/bin/python \
        benchmarks/results/walk-expand/walk_expand.py <storage of a version with a table>

The figures in walk_expand.txt: the 678k-item ALS version of `annrec bench build --dataset als
--items 1000000` (its storage under --out).
"""

import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from query_engine.graph_search import EXPANDED, best_first
from worker.index_store import load_version

K, BEAM, QUERIES, PASSES = 100, 200, 300, 6


def main(storage: Path) -> None:
    v = load_version(storage, (storage / "LATEST").read_text().strip())
    table = v.search.neighbours
    assert table is not None, "the version has no neighbour table"
    factors = np.asarray(v.search.item_factors)
    norms = np.asarray(v.search.item_norms)
    rows, scores = np.asarray(table.rows), np.asarray(table.scores)
    starts = np.random.default_rng(0).choice(len(factors), QUERIES, replace=False).tolist()
    unit = factors / np.maximum(norms[:, None], 1e-12)
    settings = (1, EXPANDED)
    recall: dict[int, list[float]] = {e: [] for e in settings}
    for start in starts:
        sims = unit @ unit[start]
        sims[start] = -np.inf
        truth = set(np.argpartition(-sims, K)[:K].tolist())
        for e in settings:
            found = best_first(factors, norms, rows, scores, start, BEAM, e)
            top = found[np.argsort(-(unit[found] @ unit[start]))[:K]]
            recall[e].append(len(truth & set(top.tolist())) / K)
    taken: dict[int, list[list[float]]] = {e: [[] for _ in starts] for e in settings}
    for p in range(PASSES):
        for e in settings if p % 2 == 0 else settings[::-1]:
            for j, start in enumerate(starts):
                t = time.perf_counter()
                best_first(factors, norms, rows, scores, start, BEAM, e)
                taken[e][j].append(time.perf_counter() - t)
    machine = platform.processor() or platform.machine()
    print(f"{machine}, {os.cpu_count()} cores; load {os.getloadavg()}")
    n, dim = factors.shape
    print(f"{n} items x {dim}, table width {rows.shape[1]}; k={K}, beam {BEAM}")
    median = {e: np.array([np.median(t) for t in taken[e]]) * 1e6 for e in settings}
    for e in settings:
        p50, p99 = np.percentile(median[e], [50, 99])
        print(
            f"expanded {e}: p50 {p50:.1f} us, p99 {p99:.1f} us, recall@{K} {np.mean(recall[e]):.4f}"
        )
    print(f"p50 ratio {np.percentile(median[EXPANDED], 50) / np.percentile(median[1], 50):.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
