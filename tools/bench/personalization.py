"""`annrec bench personalization`: does the stream-kept history (issue 23) predict what users do
next better than the version alone, and how soon does a reply reflect an event?

1. Quality (tools/bench/stream_eval.py): a seeded synthetic log whose users' interests drift
   (tools/bench/drift.py), or a `user,item,timestamp[,weight]` log given with --interactions,
   split in time; ALS trained on the past as `annrec build --interactions --tune` trains it
   (index_builder.tune.train_evaluated); the later events streamed in order, each user's next new
   item predicted before its event is applied. Hit rate@10 and NDCG@10 for popularity, the
   static version, recent_items in the request, and the stream-kept history in each combination
   of factors and recent events (query_engine/personalize.py).
2. Delay (tools/bench/personalization_delay.py): one worker on real Kafka and Redis, a synthetic
   version of --items items, events and requests at --rate each per second: the time from an
   event produced to the first reply to its user that reflects it.

Writes personalization.json and personalization.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from index_builder.evaluate import sub_events
from index_builder.train import Interactions, load_interactions, make_interactions
from index_builder.tune import AlsConfig, EvalOptions, train_evaluated
from query_engine.personalize import COMBINATIONS, Personalization
from schemas.errors import AnnrecError
from tools.bench.cli import add_quick, apply_quick
from tools.bench.drift import DriftParams, drifting_log
from tools.bench.machine import describe, machine_info
from tools.bench.stream_eval import (
    Bounds,
    evaluate_methods,
    past_matrix,
    stream_targets,
    summary,
    time_split,
)

# Each combination's weights tried (static is the `static` row itself).
TRIED = [
    Personalization("recent"),
    *(Personalization("blend", w) for w in (0.5, 0.75, 0.9)),
    *(Personalization("prior", b) for b in (0.3, 1.0, 3.0, 10.0)),
]
assert {t.combination for t in TRIED} | {"static"} == set(COMBINATIONS)
QUICK = {
    "users": 800,
    "items": 2_000,
    "targets": 500,
    "budget_s": 10.0,
    "delay_items": 5_000,
    "rate": 50,
    "duration": 3.0,
}


def register(parser: argparse.ArgumentParser) -> None:
    add_quick(parser, QUICK)
    parser.add_argument(
        "--interactions",
        type=Path,
        help="a user,item,timestamp[,weight] .csv or .parquet log instead of the synthetic one",
    )
    parser.add_argument("--users", type=int, default=5_000, help="synthetic log: users")
    parser.add_argument("--items", type=int, default=5_000, help="synthetic log: items")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fraction", type=float, default=0.2, help="the latest share streamed")
    parser.add_argument("--targets", type=int, default=5_000, help="predictions evaluated")
    parser.add_argument("--budget-s", type=float, default=120.0, help="ALS tuning budget")
    parser.add_argument("--history-length", type=int, default=50)
    parser.add_argument("--history-max-age-s", type=float, default=7 * 86_400)
    parser.add_argument("--delay-items", type=int, default=1_000_000, help="0: skip the delay")
    parser.add_argument("--rate", type=int, default=500, help="events/s and requests/s")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    a = apply_quick(args)
    out: Path = a.out
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    print(f"machine: {describe(info)}")
    bounds = Bounds(a.history_length, a.history_max_age_s)
    result: dict[str, Any] = {
        "command": "annrec " + " ".join(sys.argv[1:]),
        "machine": info,
        "quality": quality(
            a.interactions, a.users, a.items, a.seed, a.fraction, a.targets, a.budget_s, bounds
        ),
    }
    _print_quality(result["quality"])
    if a.delay_items:
        from tools.bench.personalization_delay import measure_delay

        result["delay"] = measure_delay(a.delay_items, a.rate, a.duration, a.history_length)
        _print_delay(result["delay"])
    (out / "personalization.json").write_text(json.dumps(result, indent=2))
    _plot(out / "personalization.png", result)
    print(f"wrote {out / 'personalization.json'} and {out / 'personalization.png'}")
    return 0


def quality(
    log: Path | None,
    users: int,
    items: int,
    seed: int,
    fraction: float,
    max_targets: int,
    budget_s: float,
    bounds: Bounds,
) -> dict[str, Any]:
    source: dict[str, Any]
    if log is not None:
        interactions, source = load_interactions(log), {"log": str(log)}
        if interactions.events is None or interactions.events.timestamps is None:
            raise AnnrecError(f"{log}: the log needs a timestamp column to be split in time")
    else:
        params = DriftParams(users=users, items=items)
        drift = drifting_log(params, seed)
        interactions = make_interactions(
            np.char.add("u", drift.users.astype(str)),
            np.char.add("i", drift.items.astype(str)),
            None,
            drift.timestamps,
        )
        source = {"synthetic": params.__dict__, "seed": seed}
    events = interactions.events
    assert events is not None and events.timestamps is not None
    split = time_split(events.timestamps, fraction)
    shape = interactions.user_items.shape
    past = Interactions(
        interactions.user_ids,
        interactions.item_ids,
        past_matrix(events, split, shape),
        sub_events(events, split.train_rows),
    )
    started = time.perf_counter()
    factors, trained = train_evaluated(
        past,
        AlsConfig(),
        seed=seed,
        tune="--tune" if budget_s > 0 else None,
        budget_s=budget_s,
        options=EvalOptions(seed=seed),
        allow_weak=True,
    )
    train_s = time.perf_counter() - started
    targets, candidates = stream_targets(events, split, max_targets, seed)
    started = time.perf_counter()
    methods = evaluate_methods(
        factors, past.user_items, targets, TRIED, bounds, trained.regularization
    )
    return {
        "source": source,
        "events": len(events.users),
        "streamed": int((~split.train_rows).sum()),
        "predictions": len(targets),
        "predictions_in_all": candidates,
        "bounds": bounds.__dict__,
        "training": trained.model_dump(mode="json", exclude_none=True),
        "train_s": round(train_s, 1),
        "evaluate_s": round(time.perf_counter() - started, 1),
        "methods": methods,
        **summary(methods),
    }


def _print_quality(q: dict[str, Any]) -> None:
    print(
        f"quality: {q['events']:,} events, {q['streamed']:,} streamed, "
        f"{q['predictions']:,} predictions; ALS {q['training'].get('factors')} factors, "
        f"alpha {q['training'].get('alpha')}, reg {q['training'].get('regularization')}"
    )
    static = q["methods"]["static"]["hit_rate_at_10"]
    for name, m in q["methods"].items():
        ratio = m["hit_rate_at_10"] / static if static else float("nan")
        print(
            f"  {name:28s} hit@10 {m['hit_rate_at_10']:.4f}  NDCG@10 {m['ndcg_at_10']:.4f}"
            f"  ({ratio:.2f}x static)"
        )
    print(f"  best stream combination: {q['best_stream']} ({q['hit_ratio_vs_static']:.2f}x static)")


def _print_delay(d: dict[str, Any]) -> None:
    e = d["event_to_reflecting_reply_ms"]
    r = d["request_to_reply_ms"]
    w = d["request_to_reply_without_events_ms"]
    print(
        f"delay at {d['rate']} events/s + {d['rate']} requests/s, {d['items']:,} items: "
        f"event -> reflecting reply p50 {e['p50']} ms, p99 {e['p99']} ms, max {e['max']} ms "
        f"({d['reflected']}/{d['events']} events reflected, {d['retries']} requests asked again); "
        f"request -> reply p50 {r['p50']} ms, p99 {r['p99']} ms "
        f"(without events: p50 {w['p50']} ms, p99 {w['p99']} ms; "
        f"p99 {d['request_p99_with_vs_without_events']}x)"
    )


def _plot(path: Path, result: dict[str, Any]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    delay = result.get("delay")
    fig = Figure(figsize=(12 if delay else 7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2 if delay else 1, 1)
    methods = result["quality"]["methods"]
    names = list(methods)
    ax.barh(names, [methods[n]["hit_rate_at_10"] for n in names], color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel("hit rate@10 (next new item)")
    ax.set_title("Predicting the next interaction")
    if delay:
        ax2 = fig.add_subplot(1, 2, 2)
        lat = np.sort(np.asarray(delay["delays_ms"]))
        ax2.plot(lat, np.arange(1, len(lat) + 1) / max(len(lat), 1))
        ax2.set_xlabel("event produced -> first reply reflecting it (ms)")
        ax2.set_ylabel("share of events")
        ax2.set_title(
            f"{delay['rate']} events/s + {delay['rate']} requests/s, {delay['items']:,} items"
        )
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
