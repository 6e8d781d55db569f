"""`annrec bench <kind>`: one sub-command per benchmark, each registered by its own module
(`register(parser)`: its flags and handler), loaded only when that benchmark runs.

--quick: a minute at most, so CI runs every benchmark and the code cannot rot. Each benchmark
owns its quick profile (the flag values --quick sets, whatever the command line says).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from schemas.layout import read_latest, version_dir
from tools.subcommands import Command, Table

KINDS: Table = {
    "build": Command("time and peak memory of `annrec build`", "tools.bench.build:register"),
    "ann": Command(
        "recall vs queries/s: annrec vs brute force vs peers", "tools.bench.ann:register"
    ),
    "load": Command(
        "serving latency while the next version loads beside it", "tools.bench.load:register"
    ),
    "summary": Command(
        "Markdown table of a saved `bench ann` result", "tools.bench.ann_table:register"
    ),
    # e2e_gateway wraps e2e's arguments with --via (kafka: e2e itself; gateway: side by side)
    "e2e": Command(
        "request -> reply latency through Kafka (or the gateway), open loop",
        "tools.bench.e2e_gateway:register",
    ),
    "filters": Command(
        "filtered recall and q/s at 50%% ... 0.01%% selectivity", "tools.bench.filters:register"
    ),
    "training": Command(
        "ALS vs popularity on a holdout; tuning time on a 3M log", "tools.bench.training:register"
    ),
    "personalization": Command(
        "stream-kept history vs static vs recent_items (hit@10 on a drifting log); "
        "event -> reflecting reply delay",
        "tools.bench.personalization:register",
    ),
    "freshness": Command(
        "items upserted between builds: the fresh segment's recall and cost, upsert -> reply",
        "tools.bench.freshness:register",
    ),
    "models": Command(
        "one worker serving two models vs one (p99 side by side, resident memory)",
        "tools.bench.models:register",
    ),
    "scale": Command(
        "cost curves 100k ... 10M items: build, memory, queries, one worker's rate",
        "tools.bench.scale:register",
    ),
}


def add_quick(parser: argparse.ArgumentParser, profile: Mapping[str, Any]) -> None:
    """--out (where the figures go) and --quick; `profile` maps argument names (dests) to the
    values --quick sets."""
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="small and fast (CI runs it)")
    parser.set_defaults(quick_profile=dict(profile))


def add_catalogue(parser: argparse.ArgumentParser) -> None:
    """The synthetic catalogue of the 1M benchmarks: --items, --users, --dim."""
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)


def add_storage(parser: argparse.ArgumentParser) -> None:
    """--storage and --build-only, for a benchmark that builds its own catalogue: built once and
    reused, since a 1M build takes longer than the measurement. Where the version goes:
    kept_storage."""
    parser.add_argument(
        "--storage",
        type=Path,
        help="keep the built version here and reuse it when a later run asks for the same "
        "catalogue (a default 1M build takes 12-25 minutes on a shared machine)",
    )
    parser.add_argument(
        "--build-only",
        action="store_true",
        help="build (or find) the version and stop (in --storage, else <out>/storage)",
    )


def kept_storage(args: argparse.Namespace) -> Path | None:
    """Where the benchmark's version is built: --storage; with --build-only and no --storage,
    <out>/storage (a version built only to be deleted with a temporary folder would be of no
    use); None: a temporary folder of the run."""
    if args.storage is None and args.build_only:
        return Path(args.out) / "storage"
    return args.storage


def kept_version(storage: Path, catalogue: dict[str, Any], publish: Callable[[], object]) -> str:
    """The name of the version in `storage` built from `catalogue` (what its inputs were, kept
    beside it in bench-catalogue.json): `publish()` runs unless that same catalogue was built
    there already and its version's folder is still there (a cleaned /tmp can take it and
    leave the small files beside it)."""
    built, name = storage / "bench-catalogue.json", read_latest(storage)
    kept = name is not None and version_dir(storage, name).is_dir()
    if not (kept and built.exists() and json.loads(built.read_text()) == catalogue):
        storage.mkdir(parents=True, exist_ok=True)
        publish()
        built.write_text(json.dumps(catalogue))
    return (storage / "LATEST").read_text().strip()


def apply_quick(args: argparse.Namespace) -> argparse.Namespace:
    """`args` with the quick profile's values when --quick was given."""
    if args.quick:
        for name, value in args.quick_profile.items():
            setattr(args, name, value)
    return args
