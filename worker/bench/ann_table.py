"""The stdout table of `annrec bench ann`: one block per (dataset, task), read from ann.json's
dict so a saved result prints the same way."""

from __future__ import annotations

from typing import Any

from worker.bench.machine import describe
from worker.bench.sweep import K, pareto

# Short names for the parameter column; ann.json keeps the libraries' own names.
SHORT = {"leaves_to_search": "leaves"}
ROW = "  {:<24}{:>8}{:>8}  {:<24}{:>7}{:>10}{:>9}{:>9}"


def print_tables(r: dict[str, Any]) -> None:
    """The header lines, then the compact table per (dataset, task)."""
    p, machine = r["params"], r["machine"]
    print(
        f"annrec bench ann: recall@{K} and queries/s (one query at a time), K={p['dim']}, "
        f"{p['queries']} queries for recall, {p['timed_queries']} of them timed, seed {p['seed']}"
    )
    print(f"machine: {describe(machine)}")
    blas = [b["num_threads"] for b in machine["blas"]]
    print(
        f"threads: BLAS {blas} while measuring (default {machine['blas_threads_default']}); "
        f"hnswlib and ScaNN search on 1; builds use {p['build_threads']}"
    )
    for name, status in r["peers"].items():
        print(f"peer {name}: {status.get('version') or 'skipped: ' + status['skipped']}")
    for name, d in r["datasets"].items():
        norms = ", ".join(f"{q} {v:g}" for q, v in d["item_norm_percentiles"].items())
        print(f"\n== {name}: {d['n_items']:,} items x {d['dim']}, item norms {norms}")
        for task_name, task in d["tasks"].items():
            print(
                f"{name} {task_name} ({task['metric']}), {task['queries']} queries "
                f"({task['timed_queries']} timed), ground truth {task['ground_truth_s']} s"
            )
            print(
                ROW.format(
                    "method", "build s", "MiB", "parameter", "recall", "q/s", "x single", "x batch"
                )
            )
            for m in task["methods"]:
                _print_method(m)
    print(f"\n(curves: Pareto points only, every point is in ann.json) wall {r['wall_s']} s")


def _print_method(m: dict[str, Any]) -> None:
    for i, pt in enumerate(pareto(m["points"])):
        first = i == 0
        param = ", ".join(f"{SHORT.get(k, k)}={v}" for k, v in pt["param"].items())
        print(
            ROW.format(
                m["label"] if first else "",
                f"{m['build_s']:.1f}" if first else "",
                f"{m['index_bytes'] / 2**20:.1f}" if first else "",
                param or "-",
                f"{pt['recall_at_10']:.3f}",
                f"{pt['queries_per_s']:,.0f}",
                f"{pt['speedup_vs_single']:.2f}x",
                f"{pt['speedup_vs_batched']:.2f}x",
            )
        )
