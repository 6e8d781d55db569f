"""bench scale's build: what `annrec build --factors F --storage S --no-announce` runs (the
default options, BuilderSettings' defaults), made resumable (BuildOptions.resume,
index_builder/resume.py): a 10M-item build on a shared 2-core machine takes longer than a
session lives, so each run continues from the phases the last one finished. Logs are JSON
lines (bench scale reads the phases from them)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from index_builder.inputs import load_factors
from index_builder.publish import BuildOptions, publish_version
from tools.logs import configure_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("factors", type=Path)
    parser.add_argument("storage", type=Path)
    parser.add_argument("--neighbours", type=int, help="the table's width M (0: no table)")
    args = parser.parse_args(argv)
    configure_logging("INFO", json_lines=True)
    factors = load_factors(args.factors)
    options = BuildOptions(resume=True)
    if args.neighbours is not None:
        options = dataclasses.replace(options, neighbours=args.neighbours)
    manifest = publish_version(factors, args.storage, options, source=str(args.factors))
    print(manifest.version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
