"""`annrec chaos <scenario>`: run scenarios, print their figures, write them to JSON."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tools.bench.machine import describe, machine_info
from tools.chaos.harness import clean_up
from tools.chaos.report import markdown_report
from tools.chaos.scenarios import SCENARIOS
from tools.services import configured_or_local

# --quick: seconds instead of minutes, so CI runs every scenario and none of them rots.
QUICK: dict[str, dict[str, Any]] = {
    # A looser delay bound: CI machines are shared, and a slow restart is not a slow failover.
    "crash": {
        "rate": 200,
        "duration_s": 24,
        "kill_every_s": 8,
        "n_items": 3000,
        "max_delay_s": 15.0,
    },
    "swaps": {"rate": 100, "duration_s": 15, "n_versions": 3, "n_items": 2000},
    "bad-index": {"n_items": 1000},
    # Longer than the worker's 5 s Redis timeout, so the outage makes writes fail.
    "outage": {"rate": 100, "redis_down_s": 8, "n_items": 2000},
    "fuzz": {"n_hostile": 1000, "n_items": 1000},
    # A 2 s default deadline keeps the phases short: the same shedding, in seconds; a looser
    # bound on a shared CI machine.
    "overload": {
        "overload_s": 8,
        "steady_s": 4,
        "n_items": 3000,
        "deadline_ms": 2000,
        "slack_s": 0.5,
    },
    "interactions": {"rate": 150, "duration_s": 16, "kill_every_s": 5, "n_items": 2000},
}


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "scenarios",
        nargs="*",
        default=["crash", "swaps", "bad-index", "outage", "fuzz", "overload", "interactions"],
        help="crash, swaps, bad-index, outage, fuzz, overload, interactions (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="seconds, not minutes (CI runs it)")
    parser.add_argument("--out", type=Path, help="write the figures to this JSON file")
    parser.add_argument(
        "--guarantee",
        choices=["at-least-once", "exactly-once"],
        default="at-least-once",
        help="crash: the workers' ANNREC_PROCESSING_GUARANTEE (exactly-once: audited as a "
        "read_committed reader, which must see no duplicate)",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        print(f"annrec: error: unknown scenario(s) {sorted(unknown)}", file=sys.stderr)
        return 2
    return 0 if run_chaos(args.scenarios, args.quick, args.out, args.guarantee) else 1


def run_chaos(
    names: list[str], quick: bool, out: Path | None, guarantee: str = "at-least-once"
) -> bool:
    results: dict[str, Any] = {"machine": machine_info(), "quick": quick, "scenarios": {}}
    print(f"machine: {describe(results['machine'])}")
    with configured_or_local() as svc:
        for name in names:
            started = time.monotonic()
            try:
                params = {**(QUICK[name] if quick else {})}
                if name == "crash":
                    params["guarantee"] = guarantee
                figures = SCENARIOS[name](svc, **params)
            except Exception as exc:
                figures = {
                    "scenario": name,
                    "passed": False,
                    "error": f"{type(exc).__name__}: {exc}",
                }
            finally:
                clean_up()  # no workers or folders left behind, even by a scenario that failed
            figures["wall_s"] = round(time.monotonic() - started, 1)
            results["scenarios"][name] = figures
            verdict = "PASSED" if figures["passed"] else "FAILED"
            print(f"== chaos {name}: {verdict} ({figures['wall_s']} s)")
            print(json.dumps({k: v for k, v in figures.items() if k != "scenario"}, indent=2))
            sys.stdout.flush()
    print(markdown_report(results))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
    return all(f["passed"] for f in results["scenarios"].values())
