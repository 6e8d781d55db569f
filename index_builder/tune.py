"""Training worth serving: evaluate against popularity on a holdout, optionally tune first, then
train the published factors on everything.

    holdout (evaluate.split_holdout)        the evaluation's targets, never trained on
      └─ validation (a holdout of the rest)  what tuning scores configurations on
    search  : fits on training - validation, scored on validation, within the time budget
    evaluate: the chosen configuration fitted on everything but the holdout, vs popularity
    publish : the chosen configuration fitted on everything

Tuning is a coordinate search from the given configuration: one axis at a time (weighting, alpha,
regularization, factors, iterations), each value tried with the best of the others so far. On
the synthetic logs it reaches the best of the full grid's region in ~13 fits instead of ~430.
Tuning never sees the evaluation's targets, so the evaluation is not flattered by the search.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import structlog

from index_builder.evaluate import (
    Holdout,
    factor_scorer,
    popularity_scorer,
    rank_metrics,
    split_holdout,
    sub_events,
    train_matrix,
)
from index_builder.inputs import Factors
from index_builder.progress import progress_bar, progress_disabled
from index_builder.train import Events, Interactions, fit_als, train_als, train_params
from schemas.errors import AnnrecError
from schemas.manifest import (
    WEIGHTINGS,
    Evaluation,
    RankingMetrics,
    TrainParams,
    Tuning,
    TuningPoint,
    Weighting,
)

log = structlog.get_logger(__name__)

TuneReason = Literal["--tune", "small log"]


class WeakModel(AnnrecError):
    """The trained model does not beat popularity on the holdout (and weak models are refused)."""


@dataclass(frozen=True)
class AlsConfig:
    factors: int = 64
    regularization: float = 0.01
    alpha: float = 1.0
    iterations: int = 15
    weighting: Weighting = "raw"


# The axes of the search, in the order they are searched.
GRID: dict[str, tuple[Any, ...]] = {
    "weighting": WEIGHTINGS,
    "alpha": (1.0, 5.0, 20.0, 40.0),
    "regularization": (0.01, 0.1, 1.0, 10.0),
    "factors": (32, 64, 128),
    "iterations": (10, 15, 30),
}


@dataclass(frozen=True)
class EvalOptions:
    fraction: float = 0.2  # time holdout: the latest share of the rows
    max_users: int = 10_000  # users evaluated at most (a seeded sample)
    seed: int = 0
    # Tuning fits on the rows of a seeded sample of users this large at most: the parameters
    # found on a million rows carry over, at a fraction of the fits' time.
    tune_rows: int = 1_000_000


def train_evaluated(
    interactions: Interactions,
    config: AlsConfig,
    *,
    seed: int = 0,
    tune: TuneReason | None = None,
    budget_s: float = 300.0,
    options: EvalOptions | None = None,
    allow_weak: bool = False,
) -> tuple[Factors, TrainParams]:
    """(published factors, their TrainParams with the evaluation and the search). WeakModel when
    the model does not beat popularity on the holdout, unless `allow_weak`."""
    opts = options or EvalOptions(seed=seed)
    # Bad parameters are refused before any work, with the flag's name.
    train_params(interactions, **_kwargs(config), seed=seed)
    started = time.perf_counter()
    events = interactions.events
    holdout = (
        None
        if events is None
        else split_holdout(
            events,
            len(interactions.item_ids),
            fraction=opts.fraction,
            max_users=opts.max_users,
            seed=opts.seed,
        )
    )
    if events is None or holdout is None or len(holdout.users) == 0:
        log.warning("evaluation_skipped", reason="no user has an item to hold out")
        factors, params = train_als(
            interactions, **_kwargs(config), seed=seed, show_progress=_show_progress()
        )
        return factors, params
    tuning = None
    if tune is not None:
        config, tuning = search(
            events, holdout, interactions.user_items.shape, config, seed, tune, budget_s, opts
        )
    evaluation = evaluate_config(events, holdout, interactions.user_items.shape, config, seed, opts)
    _log_evaluation(evaluation, config)
    if not evaluation.beats_popularity and not allow_weak:
        raise WeakModel(weak_reason(evaluation, tuned=tuning is not None))
    factors, params = train_als(
        interactions, **_kwargs(config), seed=seed, show_progress=_show_progress()
    )
    log.info("training_done", seconds=round(time.perf_counter() - started, 1))
    return factors, params.model_copy(update={"evaluation": evaluation, "tuning": tuning})


def _show_progress() -> bool:
    """implicit's own bar, on the project's terms (a terminal, unless ANNREC_PROGRESS says)."""
    disabled = progress_disabled()
    return not disabled if disabled is not None else sys.stderr.isatty()


def weak_reason(e: Evaluation, tuned: bool) -> str:
    advice = "" if tuned else "try --tune, or "
    return (
        f"the trained model does not beat popularity on the holdout: hit rate@{e.k} "
        f"{e.model.hit_rate_at_k:.4f} vs popularity {e.popularity.hit_rate_at_k:.4f} "
        f"(NDCG@{e.k} {e.model.ndcg_at_k:.4f} vs {e.popularity.ndcg_at_k:.4f}; "
        f"{e.holdout_users} users, {e.holdout} holdout); {advice}publish it anyway with "
        "--allow-weak-model"
    )


def evaluate_config(
    events: Events,
    holdout: Holdout,
    shape: tuple[int, int],
    config: AlsConfig,
    seed: int,
    opts: EvalOptions,
) -> Evaluation:
    """`config` fitted on the holdout's training rows, ranked against popularity."""
    train = train_matrix(events, holdout.train_rows, shape)
    model = _score_config(train, holdout, config, seed)
    popularity = rank_metrics(popularity_scorer(train), train, holdout.users, holdout.items)
    return Evaluation(
        holdout=holdout.rule,
        cutoff=holdout.cutoff,
        holdout_users=len(holdout.users),
        train_interactions=int(train.nnz),
        seed=opts.seed,
        model=model,
        popularity=popularity,
        beats_popularity=model.hit_rate_at_k > popularity.hit_rate_at_k,
    )


def _score_config(train: Any, holdout: Holdout, config: AlsConfig, seed: int) -> RankingMetrics:
    params = TrainParams(
        **_kwargs(config), seed=seed, n_interactions=int(train.nnz), implicit_version=""
    )
    item_factors, user_factors = fit_als(train, params, show_progress=False)
    return rank_metrics(
        factor_scorer(user_factors, item_factors), train, holdout.users, holdout.items
    )


def search(
    events: Events,
    holdout: Holdout,
    shape: tuple[int, int],
    start: AlsConfig,
    seed: int,
    reason: TuneReason,
    budget_s: float,
    opts: EvalOptions,
) -> tuple[AlsConfig, Tuning]:
    """The best configuration on the validation holdout (inside the holdout's training rows) and
    the curve of every configuration tried, within `budget_s` for the whole training (the
    evaluation fit and the final fit are reserved for)."""
    started = time.perf_counter()
    rest = sub_events(events, holdout.train_rows & _user_sample(events, opts))
    validation = split_holdout(
        rest, shape[1], fraction=opts.fraction, max_users=opts.max_users, seed=opts.seed + 1
    )
    if len(validation.users) == 0:
        log.warning("tuning_skipped", reason="no user has an item to validate on")
        return start, Tuning(
            reason=reason,
            budget_s=budget_s,
            seconds=0.0,
            stopped="grid_done",
            validation_users=0,
            curve=[],
        )
    train = train_matrix(rest, validation.train_rows, shape)
    # The evaluation fit and the final fit are on larger matrices: reserved for at this scale.
    scale = len(events.users) / max(1, int(validation.train_rows.sum()))
    run = _Search(train, validation, seed, started + budget_s, scale)
    with progress_bar(
        total=1 + sum(len(v) - 1 for v in GRID.values()),
        desc="tune ALS",
        unit="fit",
        leave=False,
    ) as bar:
        run.consider(start)
        bar.update()
        for axis, values in GRID.items():
            for value in values:
                if getattr(run.best, axis) != value:
                    run.consider(replace(run.best, **{axis: value}))
                    bar.update()
    tuning = Tuning(
        reason=reason,
        budget_s=budget_s,
        seconds=round(time.perf_counter() - started, 2),
        stopped="budget" if run.skipped else "grid_done",
        validation_users=len(validation.users),
        sample_rows=len(rest.users),
        curve=[p for _, p in run.points],
    )
    log.info(
        "tuned",
        **_kwargs(run.best),
        points=len(run.points),
        skipped=run.skipped,
        seconds=tuning.seconds,
    )
    return run.best, tuning


def _user_sample(events: Events, opts: EvalOptions) -> npt.NDArray[np.bool_]:
    """Rows of a seeded sample of users holding about `opts.tune_rows` rows (all: a small log)."""
    n = len(events.users)
    if n <= opts.tune_rows:
        return np.ones(n, dtype=bool)
    rng = np.random.default_rng(opts.seed + 2)
    chosen = rng.random(int(events.users.max()) + 1) < opts.tune_rows / n
    return chosen[events.users]


class _Search:
    """The configurations tried so far, the best of them, and what a fit costs."""

    def __init__(
        self, train: Any, validation: Holdout, seed: int, deadline: float, scale: float
    ) -> None:
        self.train, self.validation, self.seed = train, validation, seed
        self.deadline, self.scale = deadline, scale
        self.points: list[tuple[AlsConfig, TuningPoint]] = []
        self.unit_cost = 0.0  # seconds per factor^1.5 x iteration, from the last fit
        self.skipped = 0

    @property
    def best(self) -> AlsConfig:
        return max(self.points, key=lambda p: (p[1].hit_rate_at_k, p[1].ndcg_at_k))[0]

    def consider(self, config: AlsConfig) -> None:
        """Fit and score `config` unless it was tried or would not leave time for the two fits
        after the search (the first configuration is always tried)."""
        if any(c == config for c, _ in self.points):
            return
        if self.points:
            # The two fits after the search, with a margin for their evaluation and for a
            # machine busier than during the last fit.
            need = self._cost(config) + 2.5 * self.scale * self._cost(self.best)
            if time.perf_counter() + need > self.deadline:
                self.skipped += 1
                return
        point = _try(self.train, self.validation, config, self.seed)
        self.unit_cost = point.seconds / (config.factors**1.5 * config.iterations)
        self.points.append((config, point))
        log.info(
            "tune_point",
            **_kwargs(config),
            hit_rate=round(point.hit_rate_at_k, 4),
            ndcg=round(point.ndcg_at_k, 4),
            seconds=round(point.seconds, 2),
        )

    def _cost(self, config: AlsConfig) -> float:
        return self.unit_cost * config.factors**1.5 * config.iterations


def _try(train: Any, validation: Holdout, config: AlsConfig, seed: int) -> TuningPoint:
    started = time.perf_counter()
    metrics = _score_config(train, validation, config, seed)
    return TuningPoint(
        **_kwargs(config),
        hit_rate_at_k=metrics.hit_rate_at_k,
        ndcg_at_k=metrics.ndcg_at_k,
        coverage=metrics.coverage,
        seconds=round(time.perf_counter() - started, 3),
    )


def _kwargs(config: AlsConfig) -> dict[str, Any]:
    return {
        "factors": config.factors,
        "regularization": config.regularization,
        "alpha": config.alpha,
        "iterations": config.iterations,
        "weighting": config.weighting,
    }


def _log_evaluation(e: Evaluation, config: AlsConfig) -> None:
    log.info(
        "evaluated",
        holdout=e.holdout,
        users=e.holdout_users,
        hit_rate=round(e.model.hit_rate_at_k, 4),
        popularity_hit_rate=round(e.popularity.hit_rate_at_k, 4),
        ndcg=round(e.model.ndcg_at_k, 4),
        popularity_ndcg=round(e.popularity.ndcg_at_k, 4),
        coverage=round(e.model.coverage, 4),
        beats_popularity=e.beats_popularity,
        **_kwargs(config),
    )
