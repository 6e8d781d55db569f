"""`annrec synth`, `annrec build`, `annrec versions`: the builder's own arguments and work
(index_builder/cli.py), with where Kafka is (tools/services.py) for a build's announcement."""

from __future__ import annotations

import argparse

import structlog

from index_builder import cli as builder_cli
from schemas.errors import AnnrecError
from schemas.settings import CommonSettings
from tools import services

log = structlog.get_logger(__name__)


def register_synth(parser: argparse.ArgumentParser) -> None:
    builder_cli.add_synth_arguments(parser)
    parser.set_defaults(handler=_synth)


def register_build(parser: argparse.ArgumentParser) -> None:
    builder_cli.add_build_arguments(parser)
    parser.add_argument(
        "--announce",
        action="store_true",
        help="fail when the version cannot be announced on Kafka (default: publish anyway and "
        "warn; workers also pick new versions up by polling LATEST)",
    )
    parser.set_defaults(handler=_build)


def register_versions(parser: argparse.ArgumentParser) -> None:
    builder_cli.add_versions_arguments(parser)
    parser.set_defaults(handler=_versions)


def register_experiment(parser: argparse.ArgumentParser) -> None:
    builder_cli.add_experiment_arguments(parser)
    parser.set_defaults(handler=_experiment)


def _experiment(args: argparse.Namespace) -> int:
    return builder_cli.run_experiment(args, builder_cli.builder_settings(args))


def _synth(args: argparse.Namespace) -> int:
    builder_cli.run_synth(args)
    return 0


def _build(args: argparse.Namespace) -> int:
    if args.announce and args.no_announce:
        raise AnnrecError("--announce and --no-announce contradict each other: give one")
    settings = builder_cli.builder_settings(args)
    if args.shards > 1:
        built = builder_cli.run_sharded_build(args, settings)
        for shard in built["shards"]:
            print(f"{shard['storage']} {shard['version']}")
        return 0
    conf = None if args.no_announce else _announcing_kafka(settings, required=args.announce)
    manifest = builder_cli.run_build(args, settings, conf)
    if conf is None and not args.no_announce:
        log.warning(
            "version_not_announced",
            version=manifest.version,
            workers="pick it up by polling LATEST (ANNREC_INDEX_POLL_INTERVAL_S, default 2 s)",
        )
    print(manifest.version)
    return 0


def _announcing_kafka(settings: CommonSettings, *, required: bool) -> dict[str, str] | None:
    """The Kafka to announce on (and read item updates from), when there is one that answers;
    None, with a warning, when there is none and the announcement was not required."""
    try:
        conf = services.kafka_conf(settings)
        services.check_kafka(conf)
    except AnnrecError as exc:
        if required:
            raise
        log.warning("kafka_unavailable", reason=str(exc), then="publishing without announcing")
        return None
    return conf


def _versions(args: argparse.Namespace) -> int:
    return builder_cli.run_versions(args, builder_cli.builder_settings(args))
