"""The `annrec` command: stack, synth, build, worker, gateway, request, demo.

Every failure annrec understands exits 1 with one line on stderr: `annrec: error: <reason>`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from schemas.errors import AnnrecError, describe
from schemas.keys import ENV_PREFIX, ENV_PROGRESS
from tools.logs import configure_logging
from tools.subcommands import Command, Group, Table, add_subcommands

# Each command's arguments and handler live with its code; its module is imported only when the
# command runs (tools/subcommands.py).
COMMANDS: Table = {
    "stack": Command(
        "local Kafka (KRaft) + redis-server, no Docker", "tools.commands.stack:register"
    ),
    "synth": Command("write synthetic MF factors (.npz)", "tools.commands.builder:register_synth"),
    "build": Command(
        "build, verify, publish and announce an index version",
        "tools.commands.builder:register_build",
    ),
    "versions": Command(
        "list, garbage-collect or roll back versions", "tools.commands.builder:register_versions"
    ),
    "experiment": Command(
        "A/B test: split a model's traffic between LATEST and candidate versions",
        "tools.commands.builder:register_experiment",
    ),
    "worker": Command("serve requests from Kafka", "tools.commands.worker:register"),
    "gateway": Command(
        "HTTP for frontends, and the explorer page", "tools.commands.gateway:register"
    ),
    "status": Command(
        "group, lag, workers, versions, dead letters", "tools.commands.status:register"
    ),
    "request": Command(
        "send one request through Kafka, print the reply",
        "tools.commands.request:register_request",
    ),
    "item-update": Command(
        "publish availability changes (item-updates topic; workers apply)",
        "tools.commands.request:register_item_update",
    ),
    "item": Command(
        "add, change or remove items between builds (item-vectors topic; workers serve them)",
        "tools.commands.item:register",
    ),
    "interact": Command(
        "publish what a user did (interactions topic; their next recommend reflects it)",
        "tools.commands.request:register_interact",
    ),
    "bench": Group(
        "benchmarks: print figures, write JSON (and plots)", "bench_kind", "tools.bench.cli:KINDS"
    ),
    "schemas": Command("write the events' JSON Schemas", "tools.commands.schemas:register"),
    "chaos": Command(
        "fault injection on real Kafka and Redis (RELIABILITY.md)", "tools.chaos.run:register"
    ),
    "demo": Command("stack up, build a synthetic index, serve, ask, print", "tools.demo:register"),
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`: every command listed, the arguments of the one argv names only
    (all of them when argv is None)."""
    parser = argparse.ArgumentParser(prog="annrec", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-json", action="store_true", help="JSON lines instead of key=value")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"progress bars even when not on a terminal, or never (default: on a terminal only; "
        f"{ENV_PROGRESS}=auto|on|off)",
    )
    add_subcommands(parser, "command", COMMANDS, argv)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(words).parse_args(words)
    configure_logging(args.log_level, args.log_json)
    if args.progress is not None:  # the environment carries it to child processes too
        os.environ[ENV_PROGRESS] = "on" if args.progress else "off"
    try:
        return int(args.handler(args))
    except AnnrecError as exc:
        print(f"annrec: error: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:  # a bad ANNREC_* variable or flag value
        print(f"annrec: error: setting {describe(exc, label=_with_variable)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # a missing input file, an unwritable output directory, ...
        print(f"annrec: error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 1


def _with_variable(field: str) -> str:
    return f"{field} ({ENV_PREFIX}{field.upper()})"


if __name__ == "__main__":
    sys.exit(main())
