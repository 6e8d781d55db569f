"""`annrec bench <kind>`: the benchmarks' sub-commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(parser: argparse.ArgumentParser) -> None:
    bsub = parser.add_subparsers(dest="bench_kind", required=True)
    bbuild = bsub.add_parser("build", help="time and peak memory of `annrec build`")
    bbuild.add_argument("--out", type=Path, required=True)
    bbuild.add_argument("--quick", action="store_true", help="small and fast (CI runs it)")
    bbuild.add_argument("--items", type=int, default=1_000_000)
    bbuild.add_argument("--users", type=int, default=100_000)
    bbuild.add_argument("--dim", type=int, default=64)
    bbuild.add_argument("--trees", type=int, default=20, help="angular index trees")
    bbuild.add_argument("--mips-trees", type=int, default=10, help="trees per MIPS band")

    bann = bsub.add_parser("ann", help="recall vs queries/s: annrec vs brute force vs peers")
    bann.add_argument("--out", type=Path, required=True)
    bann.add_argument("--quick", action="store_true", help="small and fast (CI runs it)")
    bann.add_argument("--items", type=int, default=100_000, help="catalogue size (100k, 1M)")
    bann.add_argument("--datasets", default="synth,als", help="comma list of synth, als")
    bann.add_argument("--trees", type=int, default=20, help="angular (and xbox) index trees")
    bann.add_argument("--mips-trees", type=int, default=10, help="trees per MIPS norm band")
    bann.add_argument("--tasks", default="item->items,user->items", help="comma list")
    bann.add_argument(
        "--no-variants", action="store_true", help="skip the user -> items alternatives"
    )
    bann.add_argument("--queries", type=int, default=1000, help="recall is measured on these")
    bann.add_argument("--timed-queries", type=int, default=200, help="timed one at a time")
    bann.add_argument("--no-peers", action="store_true", help="skip hnswlib and ScaNN")

    bload = bsub.add_parser("load", help="serving latency while the next version loads beside it")
    bload.add_argument("--out", type=Path, required=True)
    bload.add_argument("--quick", action="store_true", help="small and fast (CI runs it)")
    bload.add_argument("--items", type=int, default=1_000_000, help="synthetic catalogue size")
    bload.add_argument("--loads", type=int, default=3, help="versions loaded, one after another")
    bload.add_argument(
        "--storage", type=Path, help="load this storage's LATEST instead of a synthetic version"
    )

    bsum = bsub.add_parser("summary", help="Markdown table of a saved `bench ann` result")
    bsum.add_argument("ann_json", type=Path, help="ann.json written by `annrec bench ann`")
    bsum.add_argument("--recalls", default="0.95,0.99", help="recall levels, comma list")

    be2e = bsub.add_parser("e2e", help="request -> reply latency through Kafka, open loop")
    be2e.add_argument("--out", type=Path, required=True)
    be2e.add_argument("--quick", action="store_true", help="small and fast (CI runs it)")
    be2e.add_argument("--rates", default="100,200,400,800,1600", help="requests/s, comma list")
    be2e.add_argument("--duration", type=float, default=15.0, help="seconds per rate")
    be2e.add_argument("--items", type=int, default=100_000)
    be2e.add_argument("--max-p99-ms", type=float, default=1000.0)

    bfilt = bsub.add_parser(
        "filters", help="filtered recall and q/s at 50%% ... 0.01%% selectivity"
    )
    bfilt.add_argument("--out", type=Path, required=True)
    bfilt.add_argument("--quick", action="store_true", help="small and fast (CI runs it)")
    bfilt.add_argument("--items", type=int, default=1_000_000)
    bfilt.add_argument("--users", type=int, default=100_000)
    bfilt.add_argument("--dim", type=int, default=64)
    bfilt.add_argument("--queries", type=int, default=200, help="per selectivity and task")

    parser.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    # Imported here: benchmarks pull in plotting and the builder, which serving never needs.
    # --quick: a minute at most, so CI runs every benchmark and the code cannot rot.
    if args.bench_kind == "build":
        from tools.bench.build import bench_build

        if args.quick:
            args.items, args.users, args.dim, args.trees, args.mips_trees = 5_000, 500, 16, 5, 5
        bench_build(args.out, args.items, args.users, args.dim, args.trees, args.mips_trees)
    elif args.bench_kind == "ann":
        from tools.bench.ann import bench_ann

        if args.quick:
            args.items, args.datasets, args.queries, args.timed_queries = 3_000, "synth", 100, 30
        bench_ann(
            args.out,
            args.items,
            args.datasets.split(","),
            args.trees,
            args.queries,
            args.timed_queries,
            peers=not args.no_peers,
            mips_trees=args.mips_trees,
            tasks=tuple(args.tasks.split(",")),
            variants=not args.no_variants,
        )
    elif args.bench_kind == "summary":
        from tools.bench.ann_table import markdown_summary

        levels = tuple(float(x) for x in args.recalls.split(","))
        print(markdown_summary(json.loads(args.ann_json.read_text()), levels))
    elif args.bench_kind == "filters":
        from tools.bench.filters import bench_filters

        if args.quick:
            args.items, args.users, args.dim, args.queries = 20_000, 2_000, 16, 30
        bench_filters(args.out, args.items, args.users, args.dim, args.queries)
    elif args.bench_kind == "e2e":
        from tools.bench.e2e import bench_e2e

        if args.quick:
            args.rates, args.duration, args.items = "50,100", 2.0, 5_000
        rates = [int(r) for r in args.rates.split(",")]
        bench_e2e(args.out, rates, args.duration, args.items, max_p99_ms=args.max_p99_ms)
    elif args.bench_kind == "load":
        from tools.bench.load import bench_load

        if args.quick:
            args.items, args.loads = 20_000, 1
        bench_load(args.out, args.items, loads=args.loads, storage=args.storage)
    return 0
