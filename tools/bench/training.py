"""`annrec bench training`: does the built-in ALS training beat popularity, by how much, and how
long does tuning take on a large log?

1. On the seeded synthetic logs of `annrec synth` (its defaults, one log per seed): hit rate@10,
   NDCG@10 and coverage on the builder's holdout, for popularity, the default (untuned) ALS
   parameters and the tuned ones (index_builder/tune.py, exactly what `annrec build` runs).
2. A large log (3M interactions by default) built with `annrec build --interactions log --tune`
   in a child process, as a user runs it: wall time to the published version, and the search.

Writes training.json and training.png (the tuning curve of the first seed, and the three
rankings per seed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from index_builder.synth import synth_interactions, write_interactions
from index_builder.train import make_interactions
from index_builder.tune import AlsConfig, EvalOptions, train_evaluated
from schemas.errors import AnnrecError
from schemas.layout import read_latest, version_dir
from schemas.manifest import Manifest
from tools.bench.cli import add_quick, apply_quick
from tools.bench.machine import describe, machine_info

# `annrec synth --out log.parquet` with its defaults.
SYNTH = {"users": 2_000, "items": 20_000, "dim": 32, "per_user": 30, "clusters": 64}
QUICK = {"seeds": [0], "budget_s": 60.0, "large_users": 0}


def register(parser: argparse.ArgumentParser) -> None:
    add_quick(parser, QUICK)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget-s", type=float, default=300.0, help="--tune-budget-s")
    parser.add_argument(
        "--large-users", type=int, default=100_000, help="users of the large log (0: skip it)"
    )
    parser.add_argument("--large-items", type=int, default=50_000)
    parser.add_argument("--large-per-user", type=int, default=30)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    a = apply_quick(args)
    bench_training(a.out, a.seeds, a.budget_s, a.large_users, a.large_items, a.large_per_user)
    return 0


def bench_training(
    out: Path,
    seeds: list[int],
    budget_s: float,
    large_users: int,
    large_items: int,
    large_per_user: int,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    print(f"machine: {describe(info)}")
    result: dict[str, Any] = {
        "synth": SYNTH,
        "budget_s": budget_s,
        "seeds": [_seed_run(seed, budget_s) for seed in seeds],
        "large": (
            _large_run(large_users, large_items, large_per_user, budget_s) if large_users else None
        ),
        "machine": info,
    }
    (out / "training.json").write_text(json.dumps(result, indent=2))
    _plot(out / "training.png", result)
    print(f"wrote {out / 'training.json'} and {out / 'training.png'}")
    return result


def _seed_run(seed: int, budget_s: float) -> dict[str, Any]:
    log = synth_interactions(
        SYNTH["users"],
        SYNTH["items"],
        SYNTH["dim"],
        SYNTH["per_user"],
        seed,
        n_clusters=SYNTH["clusters"],
    )
    interactions = make_interactions(*log)
    options = EvalOptions(seed=seed)
    started = time.perf_counter()
    _, default = train_evaluated(
        interactions, AlsConfig(), seed=seed, options=options, allow_weak=True
    )
    default_s = time.perf_counter() - started
    started = time.perf_counter()
    _, tuned = train_evaluated(
        interactions,
        AlsConfig(),
        seed=seed,
        tune="--tune",
        budget_s=budget_s,
        options=options,
        allow_weak=True,
    )
    tuned_s = time.perf_counter() - started
    assert default.evaluation is not None and tuned.evaluation is not None
    row = {
        "seed": seed,
        "n_interactions": interactions.n_interactions,
        "popularity": tuned.evaluation.popularity.model_dump(),
        "default": default.evaluation.model.model_dump(),
        "default_s": round(default_s, 1),
        "tuned": tuned.evaluation.model.model_dump(),
        "tuned_s": round(tuned_s, 1),
        "holdout_users": tuned.evaluation.holdout_users,
        "chosen": {
            "factors": tuned.factors,
            "regularization": tuned.regularization,
            "alpha": tuned.alpha,
            "iterations": tuned.iterations,
            "weighting": tuned.weighting,
        },
        "tuning": tuned.tuning.model_dump() if tuned.tuning else None,
    }
    _print_seed(row)
    return row


def _print_seed(r: dict[str, Any]) -> None:
    pop, default, tuned = r["popularity"], r["default"], r["tuned"]
    ratio = tuned["hit_rate_at_k"] / max(pop["hit_rate_at_k"], 1e-9)
    print(f"seed {r['seed']}: {r['n_interactions']:,} pairs, {r['holdout_users']} holdout users")
    for name, m in (("popularity", pop), ("default ALS", default), ("tuned ALS", tuned)):
        print(
            f"  {name:<12} hit@10 {m['hit_rate_at_k']:.4f}  ndcg@10 {m['ndcg_at_k']:.4f}  "
            f"coverage {m['coverage']:.4f}"
        )
    print(
        f"  tuned / popularity hit@10 {ratio:.1f}x; chosen {r['chosen']}; "
        f"default path {r['default_s']} s, tuned path {r['tuned_s']} s"
    )


def _large_run(n_users: int, n_items: int, per_user: int, budget_s: float) -> dict[str, Any]:
    """The log and the version live in a temporary folder: only the figures are kept."""
    with tempfile.TemporaryDirectory(prefix="annrec-bench-training-") as tmp:
        return _large_build(Path(tmp), n_users, n_items, per_user, budget_s)


def _large_build(
    tmp: Path, n_users: int, n_items: int, per_user: int, budget_s: float
) -> dict[str, Any]:
    log = tmp / f"log-{n_users}x{per_user}.parquet"
    print(f"generating {n_users * per_user:,} interactions", file=sys.stderr)
    write_interactions(
        log, synth_interactions(n_users, n_items, SYNTH["dim"], per_user, 0, n_clusters=64)
    )
    storage = tmp / "storage"
    build_args = [
        "build",
        "--interactions",
        str(log),
        "--tune",
        "--tune-budget-s",
        str(budget_s),
        "--storage",
        str(storage),
        "--no-announce",
        "--no-quality",
    ]
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tools.cli", *build_args], check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise AnnrecError(f"annrec build failed with exit code {proc.returncode}")
    version = read_latest(storage)
    assert version is not None
    manifest = Manifest.model_validate_json(
        (version_dir(storage, version) / "manifest.json").read_text()
    )
    training = manifest.training
    assert training is not None and training.tuning is not None
    assert training.evaluation is not None
    row = {
        "command": " ".join(["annrec", *build_args]).replace(str(tmp), "$TMP"),
        "log": {"users": n_users, "items": n_items, "per_user": per_user, "seed": 0},
        "n_interactions": training.n_interactions,
        "wall_s": round(wall, 1),
        "timings_s": manifest.build.timings_s,
        "evaluation": training.evaluation.model_dump(),
        "tuning": training.tuning.model_dump(),
    }
    t, e = training.tuning, training.evaluation
    print(
        f"large log: {row['n_interactions']:,} pairs, `annrec build --tune` {row['wall_s']} s "
        f"(budget {budget_s} s): search {t.seconds} s, {len(t.curve)} fits on "
        f"{t.sample_rows:,} rows, stopped: {t.stopped}; hit@10 {e.model.hit_rate_at_k:.4f} vs "
        f"popularity {e.popularity.hit_rate_at_k:.4f}"
    )
    return row


def _plot(path: Path, result: dict[str, Any]) -> None:
    """Left: the first seed's tuning curve (validation hit@10 per fit, in order). Right: hit@10
    of popularity, default and tuned ALS per seed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    curve_ax, bars_ax = fig.subplots(1, 2)
    first = result["seeds"][0]
    curve = first["tuning"]["curve"] if first["tuning"] else []
    labels = [
        f"{p['weighting']} f{p['factors']} r{p['regularization']:g} a{p['alpha']:g} "
        f"i{p['iterations']}"
        for p in curve
    ]
    curve_ax.bar(range(len(curve)), [p["hit_rate_at_k"] for p in curve], color="tab:blue")
    curve_ax.axhline(
        first["popularity"]["hit_rate_at_k"], color="black", ls="--", label="popularity (holdout)"
    )
    curve_ax.set_xticks(range(len(curve)), labels, rotation=70, ha="right", fontsize=7)
    curve_ax.set_ylabel("validation hit rate@10")
    curve_ax.set_title(f"tuning, seed {first['seed']}: fits in search order")
    curve_ax.legend()
    seeds = result["seeds"]
    width = 0.27
    for j, (key, color) in enumerate(
        (("popularity", "gray"), ("default", "tab:orange"), ("tuned", "tab:blue"))
    ):
        xs = [i + (j - 1) * width for i in range(len(seeds))]
        bars_ax.bar(xs, [s[key]["hit_rate_at_k"] for s in seeds], width, color=color, label=key)
    bars_ax.set_xticks(range(len(seeds)), [f"seed {s['seed']}" for s in seeds])
    bars_ax.set_ylabel("holdout hit rate@10")
    bars_ax.set_title("annrec synth logs: popularity vs ALS (holdout)")
    bars_ax.legend()
    fig.savefig(path, dpi=110)
