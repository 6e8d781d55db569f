"""The worker's side of `annrec bench scale`, in a child process of its own so that the memory it
reads is one worker's: load a version exactly as a worker does (worker.index_store.load_version:
sha256 of every file, mmap + prefault, checks, id lookups, the Gramian), read the process's
resident and mapped memory, then answer both kinds of request through worker.answer.answer, one
at a time on one BLAS thread (as a worker serves), each beside the exact scan of the same request
(answer(..., exact=True): every item scored) in a random order, and compare.

    python -m tools.bench.scale_probe STORAGE VERSION --queries 200 --seed 0   # prints JSON
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from schemas import manifest as mf
from schemas.events import RecommendRequest, SimilarItemsRequest
from schemas.layout import version_dir
from tools.bench.procstat import mapped_bytes, memory_status
from worker.answer import answer
from worker.index_store import LoadedVersion, load_version
from worker.parse import AnyRequest

K = 10
KINDS = ("recommend", "similar_items")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("storage", type=Path)
    parser.add_argument("version")
    parser.add_argument("--queries", type=int, default=200, help="requests of each kind")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    json.dump(probe(args.storage, args.version, args.queries, args.seed), sys.stdout)
    return 0


def probe(storage: Path, version: str, n_queries: int, seed: int) -> dict[str, Any]:
    before = memory_status()
    started = time.perf_counter()
    loaded = load_version(storage, version, checksums=True, warm=True)
    load_s = time.perf_counter() - started
    after = memory_status()
    memory = {
        "before_load_mib": before,
        "after_load_mib": after,
        "mapped_version_mib": round(mapped_bytes(version_dir(storage, version)) / 2**20),
    }
    subjects = {
        "similar_items": loaded.item_ids,
        # LoadedVersion keeps user ids only inside its lookup: the probe reads the published array
        "recommend": np.load(version_dir(storage, version) / mf.USER_IDS_FILE, mmap_mode="r"),
    }
    with threadpool_limits(1, user_api="blas"):  # a worker's default (ANNREC_BLAS_THREADS=1)
        queries = {kind: _measure(loaded, kind, subjects[kind], n_queries, seed) for kind in KINDS}
    return {
        "load_s": round(load_s, 2),
        "memory": memory,
        "queries": queries,
        "plan": loaded.log_fields(),
    }


def _measure(
    v: LoadedVersion, kind: str, ids: npt.NDArray[np.str_], n: int, seed: int
) -> dict[str, Any]:
    """recall@K of the served answers against the exact ones, and the time of each, for `n`
    requests about random subjects among `ids`."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(ids), size=min(n, len(ids)), replace=False)
    served_ms: list[float] = []
    exact_ms: list[float] = []
    recalls: list[float] = []
    for i, row in enumerate(picks.tolist()):
        request = _request(kind, f"probe-{i}", str(ids[row]))
        runs: dict[bool, list[str]] = {}
        for exact in rng.permutation([False, True]).tolist():  # neither always warms the other
            start = time.perf_counter()
            reply = answer(request, v, "scale-probe", exact=bool(exact))
            (exact_ms if exact else served_ms).append((time.perf_counter() - start) * 1000)
            runs[bool(exact)] = [item.item_id for item in reply.items if not item.filled]
        truth = set(runs[True])
        recalls.append(len(truth & set(runs[False])) / max(1, len(truth)))
    return {
        "queries": len(picks),
        "recall_at_10": round(float(np.mean(recalls)), 4),
        "served_ms": _summary(served_ms),
        "exact_ms": _summary(exact_ms),
        "served_queries_per_s": round(1000 / float(np.mean(served_ms)), 1),
        "exact_queries_per_s": round(1000 / float(np.mean(exact_ms)), 2),
        "speedup": round(float(np.mean(exact_ms)) / float(np.mean(served_ms)), 1),
    }


def _request(kind: str, request_id: str, subject: str) -> AnyRequest:
    if kind == "similar_items":
        return SimilarItemsRequest(request_id=request_id, item_id=subject, k=K)
    return RecommendRequest(request_id=request_id, user_id=subject, k=K)


def _summary(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "mean": round(float(a.mean()), 3),
        "p50": round(float(np.percentile(a, 50)), 3),
        "p99": round(float(np.percentile(a, 99)), 3),
    }


if __name__ == "__main__":
    sys.exit(main())
