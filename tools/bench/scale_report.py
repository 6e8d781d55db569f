"""The summary of `annrec bench scale` (tools/bench/scale.py): every `<out>/size-<n>.json` ->
growth exponents (least squares on log-log), projections to the sizes that stopped (labelled as
such), the fan-out simulation, `scale.json`, a Markdown table on stdout and `scale.png`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tools.bench import fanout
from tools.bench.machine import describe

KINDS = ("recommend", "similar_items")
# metric -> (label, unit): the curves fitted, plotted and projected.
METRICS: dict[str, tuple[str, str]] = {
    "build_wall_s": ("build wall time", "s"),
    "build_peak_rss_mib": ("build peak RSS", "MiB"),
    "disk_mib": ("version on disk", "MiB"),
    "worker_rss_mib": ("worker resident after load", "MiB"),
    "worker_anon_mib": ("worker anonymous (heap) after load", "MiB"),
    "worker_mapped_mib": ("worker mapped version files", "MiB"),
    "worker_load_s": ("worker load (verify + prefault)", "s"),
    "recommend_served_ms": ("recommend served, mean", "ms"),
    "similar_items_served_ms": ("similar_items served, mean", "ms"),
    "recommend_exact_ms": ("recommend exact scan, mean", "ms"),
    "similar_items_exact_ms": ("similar_items exact scan, mean", "ms"),
    "recommend_core_ms": ("recommend worker CPU per request", "core-ms"),
    "similar_items_core_ms": ("similar_items worker CPU per request", "core-ms"),
    "recommend_max_rate": ("recommend: 1 worker's rate at p99 bound", "req/s"),
    "similar_items_max_rate": ("similar_items: 1 worker's rate at p99 bound", "req/s"),
    "echo_max_rate": ("echo worker (the Kafka hop alone): rate at p99 bound", "req/s"),
}


def fit_growth(ns: list[int], ys: list[float]) -> dict[str, float] | None:
    """y ~ c * n^exponent by least squares on log-log (None with fewer than two positive
    points): how a cost grows with the catalogue."""
    pts = [(n, y) for n, y in zip(ns, ys, strict=True) if n > 0 and y > 0]
    if len(pts) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    exponent, intercept = np.polyfit(x, y, 1)
    return {"exponent": round(float(exponent), 3), "coefficient": float(np.exp(intercept))}


def project(fit: dict[str, float], n: int) -> float:
    return float(fit["coefficient"] * n ** fit["exponent"])


def metrics_of(size: dict[str, Any]) -> dict[str, float]:
    """One size's figures by METRICS name (those it has: a size that stopped has fewer)."""
    m: dict[str, float] = {}
    build = size.get("build", {})
    if "failure" not in build and "wall_s" in build:
        m["build_wall_s"] = build["wall_s"]
        m["build_peak_rss_mib"] = build["peak_rss_mib"]
        for phase, seconds in build.get("phases_s", {}).items():
            m[f"phase_{phase}_s"] = seconds
    # A build that stopped still measured the phases it finished (their logged wall times).
    for phase, figures in build.get("phases_done", {}).items():
        m.setdefault(f"phase_{phase}_s", figures["seconds"])
    if "disk_mib" in size:
        m["disk_mib"] = round(sum(size["disk_mib"].values()), 1)
    worker = size.get("worker")
    if worker:
        mem = worker["memory"]["after_load_mib"]
        m["worker_rss_mib"] = mem["VmRSS"]
        m["worker_anon_mib"] = mem.get("RssAnon", 0)
        m["worker_mapped_mib"] = worker["memory"]["mapped_version_mib"]
        m["worker_load_s"] = worker["load_s"]
        for kind in KINDS:
            q = worker["queries"][kind]
            m[f"{kind}_served_ms"] = q["served_ms"]["mean"]
            m[f"{kind}_exact_ms"] = q["exact_ms"]["mean"]
            m[f"{kind}_recall"] = q["recall_at_10"]
    kafka = size.get("kafka")
    if kafka:
        for kind in KINDS:
            search = kafka[kind]
            m[f"{kind}_max_rate"] = search["max_rate_at_p99"]
            # CPU per request does not depend on whether the latency bound held: the median
            # over every rate tried (all their requests were answered).
            cpu = [p["core_ms_per_request"] for p in search["points"] if p["answered"]]
            if cpu:
                m[f"{kind}_core_ms"] = round(float(np.median(cpu)), 3)
        if "echo_search" in kafka:
            m["echo_max_rate"] = kafka["echo_search"]["max_rate_at_p99"]
        for kind, search in kafka.get(NO_LIVE_RECALL, {}).items():
            m[f"{kind}_max_rate_{NO_LIVE_RECALL}"] = search["max_rate_at_p99"]
    return m


NO_LIVE_RECALL = "no_live_recall"  # bench scale --live-recall both: the worker without it


def searches(kafka: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A size's rate searches by column name, in table order: the default worker's per kind,
    the same worker without live recall (when run), the echo worker."""
    found = {kind: kafka[kind] for kind in KINDS if kind in kafka}
    found |= {f"{kind}, {NO_LIVE_RECALL}": s for kind, s in kafka.get(NO_LIVE_RECALL, {}).items()}
    if "echo_search" in kafka:
        found["echo"] = kafka["echo_search"]
    return found


def rate_rows(size: dict[str, Any]) -> list[dict[str, Any]]:
    """Per rate tried in a size's Kafka stage, each search's latency side by side (recommend,
    similar items, the echo worker): the last try at that rate, the one that counted (a rate
    that fails is tried again; a later try that holds ends its tries)."""
    last: dict[str, dict[int, dict[str, Any]]] = {
        name: {p["rate"]: p for p in search["points"]}
        for name, search in searches(size.get("kafka", {})).items()
    }
    rates = sorted({rate for points in last.values() for rate in points})
    return [
        {"rate": rate} | {name: points[rate] for name, points in last.items() if rate in points}
        for rate in rates
    ]


# What is projected to sizes that stopped: build, memory and disk. Query times are not: they
# follow the plan each version's quality report picks (the neighbour table, the index or the
# scan), which can change between two sizes.
PROJECTED = (
    "build_wall_s",
    "build_peak_rss_mib",
    "disk_mib",
    "worker_rss_mib",
    "worker_anon_mib",
    "worker_mapped_mib",
)


def size_file(out: Path, n_items: int) -> Path:
    return out / f"size-{n_items}.json"


def load_sizes(out: Path) -> list[dict[str, Any]]:
    files = sorted(out.glob("size-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    return [json.loads(p.read_text()) for p in files]


def load_running(out: Path) -> dict[int, dict[str, Any]]:
    """The sizes whose last word is a running-<n>.json (bench scale's status while a size runs):
    still running, or killed from outside before it could write its size file."""
    keep = ("updated_at", "elapsed_s", "stage", "build_running", "load_average", "commit")
    found = {}
    for path in out.glob("running-*.json"):
        status = json.loads(path.read_text())
        found[int(status["n_items"])] = {k: status[k] for k in keep if k in status}
    return dict(sorted(found.items()))


def summarize(out: Path) -> dict[str, Any]:
    sizes = load_sizes(out)
    if not sizes:
        raise SystemExit(f"no size measured in {out} (size-<n>.json)")
    table = {s["n_items"]: metrics_of(s) for s in sizes}
    names = sorted({name for m in table.values() for name in m})
    fits: dict[str, dict[str, float]] = {}
    for name in names:
        ns = [n for n, m in table.items() if name in m]
        fit = fit_growth(ns, [table[n][name] for n in ns])
        if fit is not None and not name.endswith("_recall"):
            fits[name] = fit
    stopped = {s["n_items"]: s["stopped"] for s in sizes if "stopped" in s}
    kept = ("wall_s", "peak_rss_mib", "phases_done", "phase_running")
    stopped_build = {
        s["n_items"]: {k: v for k, v in s["build"].items() if k in kept}
        | {"factors_s": s.get("factors_s"), "load_average": s.get("load_average")}
        for s in sizes
        if "stopped" in s
    }
    projections = {
        n: {name: round(project(fits[name], n), 2) for name in PROJECTED if name in fits}
        for n in stopped
    }
    summary = {
        "sizes": table,
        "growth": fits,
        "stopped": stopped,
        "stopped_build": stopped_build,
        "projected": projections,
        "rates": {s["n_items"]: rows for s in sizes if (rows := rate_rows(s))},
        "fanout": _fanout(sizes),
        "machine": sizes[-1]["machine"],
        "commits": sorted({str(s.get("commit")) for s in sizes}),
        "unfinished": load_running(out),
    }
    (out / "scale.json").write_text(json.dumps(summary, indent=2))
    _plot(summary, out / "scale.png")
    print(markdown(summary))
    return summary


def _fanout(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    """Per measured size and kind: S shards of that size, each with the latency distribution one
    worker had at its highest rate within the bound (else at its lowest rate), merged after one
    more hop: the echo worker's distribution measured with that size (else with the first size
    that has one: a run measures it once)."""
    echoes = [s["kafka"]["echo"] for s in sizes if "echo" in s.get("kafka", {})]
    echoes = [e for e in echoes if "latency_quantiles_ms" in e]
    if not echoes:
        return {}
    result: dict[str, Any] = {"hop_p50_ms": echoes[0]["latency_ms"].get("p50"), "shards": {}}
    for s in sizes:
        kafka = s.get("kafka", {})
        echo = kafka.get("echo") if "latency_quantiles_ms" in kafka.get("echo", {}) else None
        hop = (echo or echoes[0])["latency_quantiles_ms"]
        if echo is not None:  # the Kafka round trip alone (an echo shard): fan-out before search
            result["shards"][f"{s['n_items']} echo (no search)"] = {
                "rate": echo["rate"],
                "rows": fanout.fanout_table(hop, hop),
            }
        for kind in KINDS:
            search = kafka.get(kind, {})
            best = search.get("latency_reference") or search.get("at_max_rate")
            if best and "latency_quantiles_ms" in best:
                rows = fanout.fanout_table(best["latency_quantiles_ms"], hop)
                result["shards"][f"{s['n_items']} {kind}"] = {"rate": best["rate"], "rows": rows}
    return result


def markdown(summary: dict[str, Any]) -> str:
    lines = [f"machine: {describe(summary['machine'])}", ""]
    lines += [
        "| items | build s | build peak RSS MiB | disk MiB | worker RSS / mapped MiB | "
        "recommend recall, ms, x exact | similar recall, ms, x exact | "
        "1 worker req/s at p99 (rec / sim / echo) | core-ms per request (rec / sim) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, m in summary["sizes"].items():
        lines.append(
            f"| {int(n):,} | {_f(m, 'build_wall_s')} | {_f(m, 'build_peak_rss_mib')} | "
            f"{_f(m, 'disk_mib')} | {_f(m, 'worker_rss_mib')} / {_f(m, 'worker_mapped_mib')} | "
            + " | ".join(_query(m, kind) for kind in KINDS)
            + f" | {_f(m, 'recommend_max_rate')} / {_f(m, 'similar_items_max_rate')} / "
            f"{_f(m, 'echo_max_rate')} | "
            f"{_f(m, 'recommend_core_ms')} / {_f(m, 'similar_items_core_ms')} |"
        )
    phases = sorted(
        {name for m in summary["sizes"].values() for name in m if name.startswith("phase_")}
    )
    if phases:
        lines += ["", "| items | " + " | ".join(p[6:-2] for p in phases) + " |"]
        lines.append("|---|" + "---|" * len(phases))
        for n, m in summary["sizes"].items():
            lines.append(f"| {int(n):,} | " + " | ".join(_f(m, p) for p in phases) + " |")
    lines += _rate_table(summary.get("rates", {}))
    lines += ["", "| growth (log-log least squares) | exponent |", "|---|---|"]
    for name, fit in summary["growth"].items():
        label = METRICS.get(name, (name, ""))[0]
        lines.append(f"| {label} | {fit['exponent']:.2f} |")
    for n, reason in summary["stopped"].items():
        lines += [
            "",
            f"stopped at {int(n):,} items: {reason}",
            f"  measured until then: {summary['stopped_build'].get(n, {})}",
            f"projected at {int(n):,} (from the fits, not measured):",
        ]
        for name, value in summary["projected"][n].items():
            label, unit = METRICS[name]
            lines.append(f"  {label}: {value:,.1f} {unit}")
    for n, status in summary.get("unfinished", {}).items():
        build = status.get("build_running", {})
        done = ", ".join(
            f"{name} {p['seconds']:,.0f} s ({p['cpu_s']:,.0f} CPU s, "
            f"peak {p['peak_rss_mib']:,} MiB)"
            for name, p in build.get("phases_done", {}).items()
        )
        lines += [
            "",
            f"unfinished at {int(n):,} items (running, or killed without a word): last seen "
            f"{status['updated_at']} after {status['elapsed_s']:,} s in {status['stage']}"
            + (f", phase {build['phase_running']}" if build.get("phase_running") else "")
            + (f", peak {build['peak_rss_mib']:,} MiB" if build else ""),
            f"  phases finished: {done or 'none'}",
        ]
    if summary["fanout"].get("shards"):
        hop = summary["fanout"]["hop_p50_ms"]
        lines += ["", f"fan-out, simulated (first merger hop p50 {hop} ms; p50 / p99 ms):"]
        heads = " | ".join(f"{s} shard{'s' if s > 1 else ''}" for s in fanout.SHARD_COUNTS)
        lines += [f"| shards of | at rate | {heads} |"]
        lines.append("|---|---|" + "---|" * len(fanout.SHARD_COUNTS))
        for label, entry in summary["fanout"]["shards"].items():
            cells = " | ".join(f"{r['p50_ms']} / {r['p99_ms']}" for r in entry["rows"])
            lines.append(f"| {label} | {entry['rate']}/s | {cells} |")
    return "\n".join(lines)


def _rate_table(rates: dict[int, list[dict[str, Any]]]) -> list[str]:
    """Through Kafka, per size and rate: p50 / p99 ms of each search side by side, "ok" where the
    rate held (every reply back, no backlog, p99 within the bound)."""
    if not rates:
        return []
    columns = [*KINDS, *(f"{kind}, {NO_LIVE_RECALL}" for kind in KINDS), "echo"]
    names = [c for c in columns if any(c in row for rows in rates.values() for row in rows)]
    lines = [
        "",
        "| items | rate/s | " + " | ".join(f"{name} p50 / p99 ms" for name in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for n, rows in rates.items():
        for row in rows:
            cells = [_latency(row.get(name)) for name in names]
            lines.append(f"| {int(n):,} | {row['rate']:,} | " + " | ".join(cells) + " |")
    return lines


def _latency(point: dict[str, Any] | None) -> str:
    if point is None:
        return "-"
    lat = point["latency_ms"]
    if point["sustained"]:
        verdict = "ok"
    elif point["answered"] < point["sent"]:
        verdict = f"{point['answered']:,} of {point['sent']:,} back"
    else:
        verdict = "missed"  # over the bound, or a backlog when sending ended
    return f"{lat.get('p50', '-')} / {lat.get('p99', '-')} {verdict}"


def _f(m: dict[str, float], name: str) -> str:
    value = m.get(name)
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _query(m: dict[str, float], kind: str) -> str:
    if f"{kind}_served_ms" not in m:
        return "-"
    speedup = m[f"{kind}_exact_ms"] / m[f"{kind}_served_ms"]
    return f"{m[f'{kind}_recall']:.3f}, {m[f'{kind}_served_ms']:.2f}, {speedup:.1f}x"


PANELS = (
    ("time", ["build_wall_s", "worker_load_s"]),
    (
        "memory and disk",
        [
            "build_peak_rss_mib",
            "worker_rss_mib",
            "worker_anon_mib",
            "worker_mapped_mib",
            "disk_mib",
        ],
    ),
    (
        "query time (one thread)",
        [
            "recommend_served_ms",
            "similar_items_served_ms",
            "recommend_exact_ms",
            "similar_items_exact_ms",
        ],
    ),
    (
        "through Kafka, one worker",
        [
            "recommend_max_rate",
            "similar_items_max_rate",
            "echo_max_rate",
            "recommend_core_ms",
            "similar_items_core_ms",
        ],
    ),
)


def _plot(summary: dict[str, Any], path: Path) -> None:
    """Cost vs items, log-log, one panel per resource, each curve labelled with its exponent;
    sizes that stopped are marked where the fit projects them (hollow markers)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 9.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2).ravel()
    for ax, (title, names) in zip(axes, PANELS, strict=True):
        for name in names:
            ns = [int(n) for n, m in summary["sizes"].items() if m.get(name, 0) > 0]
            if not ns:
                continue  # a log axis shows no zero (no rate held the bound)
            ys = [summary["sizes"][n][name] for n in ns]
            fit = summary["growth"].get(name)
            label = METRICS[name][0] + (f" (n^{fit['exponent']:.2f})" if fit else "")
            (line,) = ax.plot(ns, ys, marker="o", label=label)
            for n, projected in summary["projected"].items():
                if name in projected:
                    ax.plot(
                        [int(n)], [projected[name]], marker="o", mfc="none", color=line.get_color()
                    )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("items (x64 factors)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(
        "annrec bench scale: "
        + describe(summary["machine"])
        + " (hollow: projected, not measured)",
        fontsize=8,
    )
    fig.savefig(path, dpi=110)
