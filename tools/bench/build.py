"""`annrec bench build`: wall time per phase and peak memory of `annrec build`, then what the
version serves, per request.

The build runs as a child process (exactly the command a user runs), so its peak resident memory
is the child's own (its VmHWM, followed while it runs: getrusage of children would start from this
process's size at the fork, and this process holds the generated data).
Then the version is loaded as a worker loads it and both queries go through `answer()` beside the
exact scan of the same run (tools/bench/served.py): recall, latency, and the ratio to the scan.

Datasets: `synth` (index_builder.synth: 64 clusters, lognormal norms; hard for every ANN method,
its near neighbours barely closer than the rest of their cluster) and `als` (ALS factors trained
on synthetic interactions, as `bench ann` makes them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from index_builder.inputs import save_factors
from index_builder.synth import synth_factors
from schemas.errors import AnnrecError
from schemas.layout import read_latest, version_dir
from schemas.manifest import Manifest
from tools.bench.ann import dataset
from tools.bench.cli import add_catalogue, add_quick, apply_quick
from tools.bench.machine import describe, git_commit, machine_info
from tools.bench.procstat import PeakWatch
from tools.bench.served import measure_served

QUICK = {"items": 5_000, "users": 500, "dim": 16, "trees": 5, "mips_trees": 5, "queries": 50}


def register(parser: argparse.ArgumentParser) -> None:
    add_quick(parser, QUICK)
    add_catalogue(parser)
    parser.add_argument("--trees", type=int, default=20, help="angular index trees")
    parser.add_argument("--mips-trees", type=int, default=10, help="trees per MIPS band")
    parser.add_argument(
        "--neighbours",
        type=int,
        default=None,
        help="the neighbour table's width M (default: the build's; 0: no table)",
    )
    parser.add_argument(
        "--dataset",
        choices=["synth", "als"],
        default="synth",
        help="als: factors trained on synthetic interactions (--users is then items / 10)",
    )
    parser.add_argument(
        "--queries", type=int, default=300, help="requests per kind timed through answer()"
    )
    parser.add_argument(
        "--measure-only",
        action="store_true",
        help="no build: measure again what the version an earlier run left in --out serves "
        "(its build figures are kept, the served ones replaced)",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    a = apply_quick(args)
    if a.measure_only:
        measure_again(a.out, a.queries)
        return 0
    bench_build(
        a.out,
        a.items,
        a.users,
        a.dim,
        a.trees,
        a.mips_trees,
        neighbours=a.neighbours,
        dataset_name=a.dataset,
        n_queries=a.queries,
    )
    return 0


def bench_build(
    out: Path,
    n_items: int,
    n_users: int,
    dim: int,
    n_trees: int,
    mips_trees: int,
    seed: int = 0,
    *,
    neighbours: int | None = None,
    dataset_name: str = "synth",
    n_queries: int = 300,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    factors_path = out / f"factors-{dataset_name}-{n_items}x{dim}.npz"
    if not factors_path.exists():
        print(f"generating {n_items} x {dim} {dataset_name} factors", file=sys.stderr)
        if dataset_name == "synth":
            factors = synth_factors(n_items, n_users, dim, seed=seed)
        else:
            factors = dataset(dataset_name, n_items, seed)[0]
        save_factors(factors_path, factors)
    storage = out / "storage"
    build_args = [
        "build",
        "--factors",
        str(factors_path),
        "--storage",
        str(storage),
        "--trees",
        str(n_trees),
        "--mips-trees",
        str(mips_trees),
        "--no-announce",
        *([] if neighbours is None else ["--neighbours", str(neighbours)]),
    ]
    wall, peak_mib = _run_build(build_args)
    version = read_latest(storage)
    assert version is not None
    directory = version_dir(storage, version)
    manifest = Manifest.model_validate_json((directory / "manifest.json").read_text())
    result = {
        "command": " ".join(["annrec", *build_args]),
        "params": {
            "n_items": n_items,
            "n_users": n_users,
            "dim": dim,
            "n_trees": n_trees,
            "mips_trees": mips_trees,
            "neighbours": manifest.neighbour_table.width if manifest.neighbour_table else 0,
            "dataset": dataset_name,
            "seed": seed,
        },
        "wall_s": round(wall, 1),
        "peak_rss_mib": peak_mib,
        "phases_s": manifest.build.timings_s,
        "version_bytes": sum(f.stat().st_size for f in directory.iterdir()),
        "quality": manifest.quality.model_dump() if manifest.quality else None,
        "served": measure_served(storage, version, n_queries, seed),
        "machine": machine_info(),
    }
    (out / "build.json").write_text(json.dumps(result, indent=2))
    _print(result)
    return result


def measure_again(out: Path, n_queries: int = 300, seed: int = 0) -> dict[str, Any]:
    """The served figures of the version an earlier run built in `out`, measured again by the
    code of now (a change to serving needs no build of hours); the rest of its build.json is
    kept, and `served_measured` records when and at which commit."""
    path = out / "build.json"
    storage = out / "storage"
    version = read_latest(storage)
    if not path.exists() or version is None:
        raise AnnrecError(f"--measure-only: no earlier run in {out} (build.json and storage)")
    result = json.loads(path.read_text())
    result["served"] = measure_served(storage, version, n_queries, seed)
    result["served_measured"] = {
        "machine": machine_info(),
        "commit": git_commit(),
        "load_average": list(os.getloadavg()),
        "version": version,
    }
    path.write_text(json.dumps(result, indent=2))
    _print(result)
    return result


def _run_build(build_args: list[str]) -> tuple[float, int]:
    """`annrec <build_args>` in a child process: its wall time (s) and peak RSS (MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "tools.cli", *build_args])
    watch = PeakWatch(proc.pid, min_free_gib=0.0)
    watch.start()
    returncode = proc.wait()
    watch.stop()
    wall = time.perf_counter() - start
    if returncode != 0:
        raise AnnrecError(f"annrec build failed with exit code {returncode}")
    return wall, watch.peak_mib


def _print(r: dict[str, Any]) -> None:
    p = r["params"]
    print(
        f"annrec bench build: {p['dataset']} {p['n_items']:,} items x {p['dim']}, angular "
        f"{p['n_trees']} trees, MIPS bands {p['mips_trees']} trees each, neighbour table "
        f"M={p['neighbours']}, quality report"
    )
    print(f"machine: {describe(r['machine'])}")
    print(
        f"wall {r['wall_s']} s (process start to exit), peak RSS {r['peak_rss_mib']} MiB, "
        f"version {r['version_bytes'] / 2**20:.0f} MiB on disk"
    )
    for name, seconds in r["phases_s"].items():
        print(f"  {name:<14} {seconds:8.1f} s")
    if r["quality"]:
        for kind in ("similar_items", "recommend"):
            q = r["quality"][kind]
            best = max(q["curve"], key=lambda p: p["recall_at_k"])
            head = (
                f", exact head {q['exact_items']}, bound factor {q['bound_factor']}"
                if q.get("exact_items")
                else ""
            )
            served = (
                f"index, search_k {q['search_k']}{head}"
                if q["strategy"] == "ann"
                else "exact scan (no search_k beat it at the target)"
            )
            print(
                f"  {kind:<14} serves by {served}: recall@10 {q['recall_at_k']:.3f}, "
                f"{q['queries_per_s']:.0f} q/s; brute force {q['brute_force_queries_per_s']:.0f}"
                f" q/s; index best on the curve {best['recall_at_k']:.3f} at search_k "
                f"{best['search_k']} ({best['queries_per_s']:.0f} q/s)"
            )
        table = r["quality"].get("neighbour_table")
        if table:
            walks = ", ".join(
                f"k={h['k']} beam {h.get('beam', 2)} {h['recall_at_k']:.3f} at "
                f"{h['queries_per_s']:.0f} q/s"
                for h in table["walk"]
            )
            print(
                f"  table          recall@10 {table['recall_at_k']:.3f} (95% low "
                f"{table['recall_low']:.3f}) refining beam {table.get('refine', 0)}, "
                f"{table['queries_per_s']:.0f} q/s, serves "
                f"{table['serves']}; walks: {walks or 'none'} (serve up to k="
                f"{table['walk_max_k']}, beam {table.get('walk_beam', 2)})"
            )
    again = r.get("served_measured")
    if again:
        load = ", ".join(f"{x:.1f}" for x in again["load_average"])
        print(f"served figures measured again (--measure-only) at {again['commit']}, load {load}")
    print("through answer(), one query at a time, against the exact scan of the same queries:")
    for label, f in r["served"].items():
        print(
            f"  {label:<18} recall {f['recall_at_k']:.3f}; answer p50 "
            f"{f['answer_us']['p50_us']:.0f} us p99 {f['answer_us']['p99_us']:.0f} us "
            f"({f['answer_vs_exact']}x the scan), core search {f['core_us']['p50_us']:.0f} us "
            f"({f['core_vs_exact']}x), scan p50 {f['exact_us']['p50_us']:.0f} us"
        )
