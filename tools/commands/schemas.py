"""`annrec schemas`: write the events' JSON Schemas (schemas/export.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from schemas.export import write_schemas


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    for path in write_schemas(args.out):
        print(path)
    return 0
