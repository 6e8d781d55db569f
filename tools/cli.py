"""The `annrec` command: stack, synth, build, worker, request, demo.

Every failure annrec understands exits 1 with one line on stderr: `annrec: error: <reason>`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from adapters.item_updates import publish_item_updates
from adapters.topics import ensure_topics, topic_specs
from index_builder import cli as builder_cli
from schemas.errors import AnnrecError
from schemas.events import ItemUpdate, RecommendRequest, Reply, SimilarItemsRequest
from schemas.export import write_schemas
from schemas.filters import FILTER_ADAPTER, Filter, check_shape
from schemas.settings import CommonSettings
from tools import services
from tools.client import new_request_id, request_once
from tools.logs import configure_logging
from tools.stack import LocalStack
from worker.app import Worker
from worker.settings import WorkerSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="annrec", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-json", action="store_true", help="JSON lines instead of key=value")
    sub = parser.add_subparsers(dest="command", required=True)

    stack = sub.add_parser("stack", help="local Kafka (KRaft) + redis-server, no Docker")
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.add_argument("--state-dir", type=Path, help="default ANNREC_STACK_DIR")

    builder_cli.register(sub)

    worker = sub.add_parser("worker", help="serve requests from Kafka")
    worker.add_argument("--storage", help="directory or s3://bucket/prefix (ANNREC_STORAGE)")
    worker.add_argument("--group-id")
    worker.add_argument("--batch-size", type=int)
    worker.add_argument("--metrics-port", type=int, help="-1 off, 0 any free port")
    worker.add_argument("--cold-start", choices=["popular", "error"])
    worker.add_argument("--serve-from-cache", action="store_true", default=None)
    worker.add_argument("--worker-id")

    status = sub.add_parser("status", help="group, lag, workers, versions, dead letters")
    status.add_argument("--storage", help="directory or s3://bucket/prefix (ANNREC_STORAGE)")
    status.add_argument("--group-id")
    status.add_argument("--json", action="store_true", help="one JSON document")

    request = sub.add_parser("request", help="send one request through Kafka, print the reply")
    request.add_argument("kind", choices=["similar-items", "recommend"])
    request.add_argument("--item-id")
    request.add_argument("--user-id")
    request.add_argument("-k", type=int, default=10)
    request.add_argument("--timeout", type=float, default=30.0)
    request.add_argument("--json", action="store_true", help="print the reply event as JSON")
    request.add_argument("--filter", help='JSON filter, e.g. \'{"attr": "in_stock", "eq": true}\'')

    update = sub.add_parser(
        "item-update", help="publish availability changes (item-updates topic; workers apply)"
    )
    update.add_argument("item_ids", nargs="+", metavar="ITEM_ID")
    update.add_argument("--value", choices=["true", "false"], required=True)
    update.add_argument("--attr", default="in_stock", help="a boolean attribute (in_stock)")

    bench = sub.add_parser("bench", help="benchmarks: print figures, write JSON (and plots)")
    bsub = bench.add_subparsers(dest="bench_kind", required=True)
    bbuild = bsub.add_parser("build", help="time and peak memory of `annrec build`")
    bbuild.add_argument("--out", type=Path, required=True)
    bbuild.add_argument("--quick", action="store_true", help="small and fast (CI runs it)")
    bbuild.add_argument("--items", type=int, default=1_000_000)
    bbuild.add_argument("--users", type=int, default=100_000)
    bbuild.add_argument("--dim", type=int, default=64)
    bbuild.add_argument("--trees", type=int, default=20, help="angular index trees")
    bbuild.add_argument("--mips-trees", type=int, default=10, help="trees per MIPS band")

    schemas_cmd = sub.add_parser("schemas", help="write the events' JSON Schemas")
    schemas_cmd.add_argument("--out", type=Path, required=True)

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

    chaos = sub.add_parser("chaos", help="fault injection on real Kafka and Redis (RELIABILITY.md)")
    chaos.add_argument(
        "scenarios",
        nargs="*",
        default=["crash", "swaps", "bad-index", "outage", "fuzz"],
        help="crash, swaps, bad-index, outage, fuzz (default: all)",
    )
    chaos.add_argument("--quick", action="store_true", help="seconds, not minutes (CI runs it)")
    chaos.add_argument("--out", type=Path, help="write the figures to this JSON file")

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

    demo = sub.add_parser("demo", help="stack up, build a synthetic index, serve, ask, print")
    demo.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_json)
    try:
        return _dispatch(args)
    except AnnrecError as exc:
        print(f"annrec: error: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:  # a bad ANNREC_* variable or flag value
        first = exc.errors()[0]
        print(f"annrec: error: setting {first['loc'][0]}: {first['msg']}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # a missing input file, an unwritable output directory, ...
        print(f"annrec: error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "stack": _stack,
        "synth": _synth,
        "build": _build,
        "versions": lambda a: builder_cli.run_versions(a, builder_cli.builder_settings(a)),
        "worker": _worker,
        "request": _request,
        "status": _status,
        "item-update": _item_update,
        "bench": _bench,
        "schemas": _schemas,
        "chaos": _chaos,
        "demo": _demo,
    }
    return handlers[args.command](args)


def _synth(args: argparse.Namespace) -> int:
    builder_cli.run_synth(args)
    return 0


def _build(args: argparse.Namespace) -> int:
    settings = builder_cli.builder_settings(args)
    conf = None if args.no_announce else services.kafka_conf(settings)
    manifest = builder_cli.run_build(args, settings, conf)
    print(manifest.version)
    return 0


def _schemas(args: argparse.Namespace) -> int:
    for path in write_schemas(args.out):
        print(path)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from tools.demo import run_demo  # the demo pulls in the builder; keep it off other paths

    return run_demo(keep=args.keep)


def _chaos(args: argparse.Namespace) -> int:
    from tools.chaos.run import run_chaos  # scenarios pull in the builder
    from tools.chaos.scenarios import SCENARIOS

    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        print(f"annrec: error: unknown scenario(s) {sorted(unknown)}", file=sys.stderr)
        return 2
    return 0 if run_chaos(args.scenarios, args.quick, args.out) else 1


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
        import json

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


def _stack(args: argparse.Namespace) -> int:
    settings = CommonSettings()
    stack = LocalStack(args.state_dir or settings.stack_dir)
    if args.action == "up":
        info = stack.up()
        ensure_topics({"bootstrap.servers": info.kafka_bootstrap}, topic_specs(settings))
        print(info.exports(), end="")
    elif args.action == "down":
        print("stopped" if stack.down() else "not running")
    else:
        info = stack.running()
        if info is None:
            print("not running")
            return 3
        print(info.exports(), end="")
    return 0


def _worker(args: argparse.Namespace) -> int:
    names = (
        "storage",
        "group_id",
        "batch_size",
        "metrics_port",
        "cold_start",
        "serve_from_cache",
        "worker_id",
    )
    overrides = {n: getattr(args, n) for n in names}
    settings = WorkerSettings(**{k: v for k, v in overrides.items() if v is not None})
    worker = Worker(settings, services.kafka_conf(settings), services.redis_url(settings))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())  # finish the batch, commit, close
    worker.run(stop)
    return 0


def _status(args: argparse.Namespace) -> int:
    from tools.status import collect_status, render_status

    overrides = {"storage": args.storage, "group_id": args.group_id}
    settings = WorkerSettings(**{k: v for k, v in overrides.items() if v is not None})
    doc = collect_status(settings, services.kafka_conf(settings), services.redis_url(settings))
    print(json.dumps(doc, indent=2) if args.json else render_status(doc))
    return 0


def _item_update(args: argparse.Namespace) -> int:
    settings = CommonSettings()
    conf = services.kafka_conf(settings)
    ensure_topics(conf, topic_specs(settings))
    try:
        updates = [
            ItemUpdate(item_id=i, attr=args.attr, value=args.value == "true") for i in args.item_ids
        ]
    except ValidationError as exc:
        raise AnnrecError(f"item update: {exc.errors()[0]['msg']}") from exc
    publish_item_updates(conf, settings.topic_item_updates, updates)
    print(f"{len(updates)} updates published to {settings.topic_item_updates}")
    return 0


def _request(args: argparse.Namespace) -> int:
    settings = CommonSettings()
    request: SimilarItemsRequest | RecommendRequest
    common: dict[str, Any] = {"request_id": new_request_id(), "k": args.k}
    if args.filter:
        common["filter"] = _parse_filter(args.filter)
    if args.kind == "similar-items":
        if not args.item_id:
            raise AnnrecError("similar-items needs --item-id")
        request = SimilarItemsRequest(item_id=args.item_id, **common)
    else:
        if not args.user_id:
            raise AnnrecError("recommend needs --user-id")
        request = RecommendRequest(user_id=args.user_id, **common)
    reply = request_once(
        services.kafka_conf(settings),
        settings.topic_requests,
        settings.topic_replies,
        request,
        args.timeout,
    )
    print(reply.model_dump_json(indent=2) if args.json else format_reply(reply))
    return 0 if reply.status in ("ok", "no_match") else 1


def _parse_filter(text: str) -> Filter:
    try:
        return check_shape(FILTER_ADAPTER.validate_json(text))
    except (ValidationError, ValueError) as exc:
        raise AnnrecError(f"--filter: {str(exc).splitlines()[0]}") from exc


def format_reply(reply: Reply) -> str:
    if reply.status == "no_match":
        return f"{reply.request_id}: no_match: no item passes the filter"
    if reply.status != "ok":
        return f"{reply.request_id}: {reply.status}: {reply.error}"
    head = (
        f"{reply.kind} for {reply.subject_id}  (index {reply.index_version}, "
        f"worker {reply.worker_id})"
    )
    rows = [
        f"{i:>4}  {item.item_id:<16} "
        + ("filled".rjust(10) if item.score is None else f"{item.score:>10.4f}")
        for i, item in enumerate(reply.items, 1)
    ]
    return "\n".join([head, f"{'rank':>4}  {'item_id':<16} {'score':>10}", *rows])


if __name__ == "__main__":
    sys.exit(main())
