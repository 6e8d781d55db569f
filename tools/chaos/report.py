"""Markdown tables of a chaos run's figures (what RELIABILITY.md quotes)."""

from __future__ import annotations

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


def _rows(name: str, f: dict[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [(f"param {k}", v) for k, v in f.get("params", {}).items()]
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
    if name == "crash":
        rows += [
            ("workers killed with SIGKILL (and restarted)", f["kills"]),
            ("duplicates identical to the first reply", f["duplicates_identical"]),
        ]
    elif name == "swaps":
        rows += [
            ("versions that served replies", f["versions_served"]),
            ("replies naming an unpublished version", f["replies_naming_unpublished_versions"]),
            (
                "replies whose scores are not their version's",
                f["replies_not_matching_their_version"],
            ),
            ("failed requests", f["failed"]),
        ]
    elif name == "bad-index":
        for c in f["cases"]:
            rows.append(
                (
                    f"{c['damage']} version",
                    f"refused: {c['refused']}, logged: {c['refusal_logged']}, "
                    f"{c['answered']}/20 answered by the previous version: "
                    f"{c['served_by_previous']}",
                )
            )
        rows += [
            ("annrec_index_refusals_total", f["refusals_metric"]),
            ("next good version served", f["next_good_version_served"]),
        ]
    elif name == "outage":
        rows += [
            ("broker restart took (s)", f["broker_restart_s"]),
            ("batches not written (logged, rewound, retried)", f["write_failures_logged"]),
            ("workers crashed", f["worker_crashed"] or "none"),
        ]
    elif name == "fuzz":
        rows += [
            ("hostile events accepted by Kafka", f["hostile_produced"]),
            ("dead letters (one per hostile event)", f["dead_letters"]),
            ("dead letters without a reason", f["dead_letters_without_reason"]),
            (
                "valid events interleaved / answered",
                f"{f['params']['valid']} / {f['valid_answered']}",
            ),
            ("valid events lost", f["valid_lost"]),
            ("workers crashed", f["worker_crashed"] or "none"),
            ("top reasons", "; ".join(f"{k} ({v})" for k, v in f["reasons"].items())),
        ]
    return rows
