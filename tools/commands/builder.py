"""`annrec synth`, `annrec build`, `annrec versions`: the builder's own arguments and work
(index_builder/cli.py), with where Kafka is (tools/services.py) for a build's announcement."""

from __future__ import annotations

import argparse

from index_builder import cli as builder_cli
from tools import services


def register_synth(parser: argparse.ArgumentParser) -> None:
    builder_cli.add_synth_arguments(parser)
    parser.set_defaults(handler=_synth)


def register_build(parser: argparse.ArgumentParser) -> None:
    builder_cli.add_build_arguments(parser)
    parser.set_defaults(handler=_build)


def register_versions(parser: argparse.ArgumentParser) -> None:
    builder_cli.add_versions_arguments(parser)
    parser.set_defaults(handler=_versions)


def _synth(args: argparse.Namespace) -> int:
    builder_cli.run_synth(args)
    return 0


def _build(args: argparse.Namespace) -> int:
    settings = builder_cli.builder_settings(args)
    conf = None if args.no_announce else services.kafka_conf(settings)
    manifest = builder_cli.run_build(args, settings, conf)
    print(manifest.version)
    return 0


def _versions(args: argparse.Namespace) -> int:
    return builder_cli.run_versions(args, builder_cli.builder_settings(args))
