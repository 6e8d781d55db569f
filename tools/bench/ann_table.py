"""The stdout table of `annrec bench ann`: one block per (dataset, task), read from ann.json's
dict so a saved result prints the same way."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tools.bench.machine import describe
from tools.bench.sweep import K, pareto

# Short names for the parameter column; ann.json keeps the libraries' own names.
SHORT = {"leaves_to_search": "leaves"}
ROW = "  {:<24}{:>8}{:>8}  {:<24}{:>7}{:>10}{:>9}{:>9}"


def register(parser: argparse.ArgumentParser) -> None:
    """`annrec bench summary`: the Markdown table of a saved result."""
    parser.add_argument("ann_json", type=Path, help="ann.json written by `annrec bench ann`")
    parser.add_argument("--recalls", default="0.95,0.99", help="recall levels, comma list")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    levels = tuple(float(x) for x in args.recalls.split(","))
    print(markdown_summary(json.loads(args.ann_json.read_text()), levels))
    return 0


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


def markdown_summary(r: dict[str, Any], recalls: tuple[float, ...] = (0.95, 0.99)) -> str:
    """Per (dataset, task, method): the fastest point at each recall level, as x single / x
    batched brute force, in a Markdown table (what BENCHMARKS.md quotes)."""
    levels = " | ".join(f"fastest at >= {level}" for level in recalls)
    lines = [
        f"| dataset, task | method | build s | {levels} | best recall |",
        "|---|---|---|" + "---|" * len(recalls) + "---|",
    ]
    for name, d in r["datasets"].items():
        for task_name, task in d["tasks"].items():
            for m in task["methods"]:
                if m["name"].startswith("brute"):
                    continue
                cells = [_fastest(m["points"], level) for level in recalls]
                best = max(m["points"], key=lambda p: (p["recall_at_10"], p["queries_per_s"]))
                lines.append(
                    f"| {name} {task_name} | {m['label']} | {m['build_s']:.0f} | "
                    + " | ".join(cells)
                    + f" | {best['recall_at_10']:.3f} ({best['speedup_vs_single']:.1f}x) |"
                )
    return "\n".join(lines)


def _fastest(points: list[dict[str, Any]], level: float) -> str:
    reached = [p for p in points if p["recall_at_10"] >= level]
    if not reached:
        return "-"
    p = max(reached, key=lambda p: p["queries_per_s"])
    return (
        f"{p['recall_at_10']:.3f}: {p['speedup_vs_single']:.0f}x / {p['speedup_vs_batched']:.0f}x"
    )
