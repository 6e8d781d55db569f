"""`annrec stack up|down|status`: the local Kafka + Redis (tools/stack.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from adapters.topics import ensure_topics, topic_specs
from schemas.settings import CommonSettings
from tools.stack import LocalStack


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, help="default ANNREC_STACK_DIR")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = CommonSettings()
    stack = LocalStack(args.state_dir or settings.stack_dir)
    if args.action == "up":
        info = stack.up()
        ensure_topics({"bootstrap.servers": info.kafka_bootstrap}, topic_specs(settings))
        print(info.exports(), end="")
    elif args.action == "down":
        print("stopped" if stack.down() else "not running")
    else:
        running = stack.running()
        if running is None:
            print("not running")
            return 3
        print(running.exports(), end="")
    return 0
