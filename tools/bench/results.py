"""How a bench command ends: what ran and where into its results, then the JSON, the plot and
the printed table, in that order (a figure is on disk before it is shown, so a failing plot or
print cannot lose a long run's results).

One helper so that no command stores its figures without the command line and the machine
they were measured on (BENCHMARKS.md quotes both beside every figure).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tools.bench.machine import machine_info

Results = dict[str, Any]


def command_line() -> str:
    """The command as it was typed, from `annrec` on: stored so anyone can run it again."""
    return "annrec " + " ".join(sys.argv[1:])


def write_results(
    out: Path,
    results: Results,
    json_name: str,
    png_name: str,
    plot: Callable[[Results, Path], None],
    show: Callable[[Results], None],
) -> Results:
    """`results` with "command" and "machine" added as its last keys, written to
    out/json_name, plotted by `plot` into out/png_name, then printed by `show`."""
    results.update({"command": command_line(), "machine": machine_info()})
    (out / json_name).write_text(json.dumps(results, indent=2))
    plot(results, out / png_name)
    show(results)
    return results
