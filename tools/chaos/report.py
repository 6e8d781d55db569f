"""Markdown tables of a chaos run's figures (what RELIABILITY.md quotes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def markdown_report(results: dict[str, Any]) -> str:
    out: list[str] = []
    for name, f in results["scenarios"].items():
        out.append(f"### {name}: {'passed' if f['passed'] else 'FAILED'} ({f.get('wall_s')} s)\n")
        if "error" in f:
            out.append(f"error: {f['error']}\n")
            continue
        if "skipped" in f:
            out.append(f"skipped: {f['skipped']}\n")
            continue
        rows = _rows(name, f)
        out.append("| figure | value |\n|---|---|")
        out.extend(f"| {k} | {v} |" for k, v in rows)
        out.append("")
    return "\n".join(out)


Rows = list[tuple[str, Any]]


def _rows(name: str, f: dict[str, Any]) -> Rows:
    rows: Rows = [(f"param {k}", v) for k, v in f.get("params", {}).items()]
    a = f.get("audit")
    if a:
        rows += [
            ("requests sent (acknowledged by Kafka)", a["sent"]),
            ("with a reply on the reply topic", a["replied"]),
            ("**lost** (no reply, or no Redis key)", f"**{a['lost']}**"),
            ("missing in Redis", a["missing_in_redis"]),
            ("duplicate replies", a["duplicates"]),
            ("reply statuses", a["statuses"]),
        ]
    scenario_rows = _SCENARIO_ROWS.get(name)
    return rows + scenario_rows(f) if scenario_rows else rows


def _crash_rows(f: dict[str, Any]) -> Rows:
    rows: Rows = [
        ("workers killed with SIGKILL (and restarted)", f["kills"]),
        ("duplicates identical to the first reply", f["duplicates_identical"]),
    ]
    fo = f.get("failover")
    if fo:
        d = fo["delay_s"]
        rows.append(
            ("request-to-reply delay p50 / p99 / max (s)", f"{d['p50']} / {d['p99']} / {d['max']}")
        )
        for i, k in enumerate(fo["kills"], 1):
            gaps = ", ".join(f"{p}: {g}" for p, g in k["partition_unserved_s"].items())
            rows.append(
                (
                    f"kill {i} ({k['worker']}): delay max (s); unserved s per partition",
                    f"{k['delay_s']['max']}; {gaps}",
                )
            )
        rows.append(("longest a partition went unserved (s)", fo["partition_unserved_max_s"]))
    return rows


def _swaps_rows(f: dict[str, Any]) -> Rows:
    return [
        ("versions that served replies", f["versions_served"]),
        ("replies naming an unpublished version", f["replies_naming_unpublished_versions"]),
        ("replies whose scores are not their version's", f["replies_not_matching_their_version"]),
        ("failed requests", f["failed"]),
    ]


def _bad_index_rows(f: dict[str, Any]) -> Rows:
    cases = [
        (
            f"{c['damage']} version",
            f"refused: {c['refused']}, logged: {c['refusal_logged']}, "
            f"{c['answered']}/20 answered by the previous version: {c['served_by_previous']}",
        )
        for c in f["cases"]
    ]
    return [
        *cases,
        ("annrec_index_refusals_total", f["refusals_metric"]),
        ("next good version served", f["next_good_version_served"]),
    ]


def _outage_rows(f: dict[str, Any]) -> Rows:
    return [
        ("broker restart took (s)", f["broker_restart_s"]),
        ("batches not written (logged, rewound, retried)", f["write_failures_logged"]),
        ("workers crashed", f["worker_crashed"] or "none"),
    ]


def _fuzz_rows(f: dict[str, Any]) -> Rows:
    return [
        ("hostile events accepted by Kafka", f["hostile_produced"]),
        ("dead letters (one per hostile event)", f["dead_letters"]),
        ("dead letters without a reason", f["dead_letters_without_reason"]),
        (
            "with a readable request_id / of them without an error reply",
            f"{f.get('readable_ids')} / {f.get('readable_ids_without_error_reply')}",
        ),
        ("valid events interleaved / answered", f"{f['params']['valid']} / {f['valid_answered']}"),
        ("valid events lost", f["valid_lost"]),
        ("workers crashed", f["worker_crashed"] or "none"),
        ("top reasons", "; ".join(f"{k} ({v})" for k, v in f["reasons"].items())),
    ]


def _overload_rows(f: dict[str, Any]) -> Rows:
    rows: Rows = [("one worker's capacity (requests/s)", f["capacity_per_s"])]
    for name, p in f["phases"].items():
        d = p["delay_s"]
        rows.append(
            (
                f"{name}: replies by status; delay p50 / p99 / max (s)",
                f"{p['statuses']}; {d['p50']} / {d['p99']} / {d['max']}",
            )
        )
    rows.append(("back to the steady p99 after the overload (s)", f["recovered_after_s"]))
    return rows


def _interactions_rows(f: dict[str, Any]) -> Rows:
    h = f["history"]
    return [
        ("workers killed with SIGKILL (and restarted)", f["kills"]),
        ("interaction events produced", f["events_produced"]),
        ("events delivered again after a kill (absorbed by the history)", h["delivered_again"]),
        ("events held in the users' Redis histories", h["held"]),
        ("**events lost**", f"**{h['lost']}**"),
        ("**events double-counted**", f"**{h['double_counted']}**"),
    ]


_SCENARIO_ROWS: dict[str, Callable[[dict[str, Any]], Rows]] = {
    "crash": _crash_rows,
    "swaps": _swaps_rows,
    "bad-index": _bad_index_rows,
    "outage": _outage_rows,
    "fuzz": _fuzz_rows,
    "overload": _overload_rows,
    "interactions": _interactions_rows,
}
