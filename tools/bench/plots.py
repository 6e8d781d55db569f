"""Plots of the bench commands (matplotlib's Figure API on an Agg canvas: no pyplot global
state, no display needed): the frame each command's figure is drawn in (`saved_figure`), and
`annrec bench ann`'s recall / queries-per-second plot."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tools.bench.machine import describe
from tools.bench.sweep import pareto

STYLES = {
    "annrec": ("tab:blue", "o"),
    "hnswlib": ("tab:orange", "s"),
    "scann": ("tab:green", "^"),
}
# The user -> items alternatives (tools/bench/mips_variants.py), in the order they appear.
OTHER_STYLES = [
    ("tab:red", "x"),
    ("tab:purple", "v"),
    ("tab:brown", "D"),
    ("tab:pink", "P"),
    ("tab:olive", "*"),
    ("tab:cyan", "<"),
    ("tab:gray", ">"),
]
BRUTE_STYLES = {"brute_single": ("black", "--"), "brute_batched": ("dimgray", ":")}


@contextmanager
def saved_figure(
    path: Path,
    machine: dict[str, Any] | None,
    *,
    figsize: tuple[float, float],
    dpi: int = 110,
    machine_fontsize: float = 8,
    **grid: Any,
) -> Iterator[Any]:
    """The axes of a figure (`grid`: Figure.subplots' arguments) for the caller to draw on; once
    drawn, the machine the figures were measured on (tools.bench.machine.describe) as its
    subtitle, laid out and saved to `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    yield fig.subplots(**grid)
    if machine is not None:
        fig.suptitle(describe(machine), fontsize=machine_fontsize)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)


def plot_dataset(path: Path, title: str, tasks: dict[str, dict[str, Any]]) -> None:
    """One PNG, one panel per task: x recall@10, y queries/s (log), a Pareto line per method and
    the two brute forces as horizontal lines."""
    # The Figure API with an explicit Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5 * len(tasks), 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, (task_name, task) in zip(axes, tasks.items(), strict=True):
        others = iter(OTHER_STYLES * 2)
        for method in task["methods"]:
            name = method["name"]
            qps = method["points"][0]["queries_per_s"] if method["points"] else None
            if name in BRUTE_STYLES and qps:
                color, line = BRUTE_STYLES[name]
                ax.axhline(qps, color=color, linestyle=line, label=f"{method['label']}")
                continue
            front = pareto(method["points"])
            if not front:
                continue
            color, marker = STYLES[name] if name in STYLES else next(others)
            ax.plot(
                [p["recall_at_10"] for p in front],
                [p["queries_per_s"] for p in front],
                color=color,
                marker=marker,
                label=method["label"],
            )
        ax.set_yscale("log")
        ax.set_xlim(min(0.5, _min_recall(task)), 1.005)
        ax.set_xlabel("recall@10")
        ax.set_ylabel("queries/s, one thread (log)")
        ax.set_title(f"{task_name} ({task['metric']})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small", loc="best")
    fig.suptitle(title)
    fig.savefig(path, dpi=110)


def _min_recall(task: dict[str, Any]) -> float:
    recalls = [p["recall_at_10"] for m in task["methods"] for p in m["points"]]
    return max(0.0, min(recalls, default=0.0) - 0.02)
