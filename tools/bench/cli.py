"""`annrec bench <kind>`: one sub-command per benchmark, each registered by its own module
(`register(parser)`: its flags and handler), loaded only when that benchmark runs.

--quick: a minute at most, so CI runs every benchmark and the code cannot rot. Each benchmark
owns its quick profile (the flag values --quick sets, whatever the command line says).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

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
    "e2e": Command("request -> reply latency through Kafka, open loop", "tools.bench.e2e:register"),
    "filters": Command(
        "filtered recall and q/s at 50%% ... 0.01%% selectivity", "tools.bench.filters:register"
    ),
}


def add_quick(parser: argparse.ArgumentParser, profile: Mapping[str, Any]) -> None:
    """The --quick flag; `profile` maps argument names (dests) to the values it sets."""
    parser.add_argument("--quick", action="store_true", help="small and fast (CI runs it)")
    parser.set_defaults(quick_profile=dict(profile))


def apply_quick(args: argparse.Namespace) -> argparse.Namespace:
    """`args` with the quick profile's values when --quick was given."""
    if args.quick:
        for name, value in args.quick_profile.items():
            setattr(args, name, value)
    return args
