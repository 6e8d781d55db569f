"""Builder settings: ANNREC_* environment variables, overridable by `annrec build` flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from index_builder.neighbours import DEFAULT_WIDTH
from schemas.settings import CommonSettings


class BuilderSettings(CommonSettings):
    n_trees: int = Field(20, ge=1, le=1000, description="Annoy trees of the angular index")
    mips_trees: int = Field(10, ge=1, le=1000, description="Annoy trees per MIPS norm band")
    neighbours: int = Field(
        DEFAULT_WIDTH,
        ge=0,
        le=1000,
        description="M of the neighbour table: the nearest items stored per item for similar "
        "items (0: no table, the angular index serves them)",
    )
    seed: int = 42
    build_jobs: int = Field(-1, description="Annoy build threads; -1 = all cores")
    build_resume: bool = Field(
        False,
        description="keep a stopped build's finished phases and continue a stopped build of the "
        "same factors and options from them (annrec build --resume; index_builder/resume.py)",
    )
    target_recall: float = Field(
        0.95, gt=0, le=1, description="recall@10 that search_k is tuned for"
    )
    # "Far below target": catches broken builds (Annoy's buggy `dot` metric scored 0.003-0.175,
    # annoy #619) without refusing honest-but-weak ones (one augmented index over skewed norms).
    min_recall: float = Field(0.3, ge=0, le=1, description="below this a build is not published")
    fold_in_regularization: float = Field(
        0.01, ge=0, description="ALS regularization for recent_items fold-in (untrained factors)"
    )
    fold_in_alpha: float = Field(1.0, gt=0, description="confidence of one recent item")
    tune_budget_s: float = Field(
        300.0, gt=0, description="ALS training with tuning: wall-time budget of the search + fits"
    )
    tune_small_log: int = Field(
        250_000,
        ge=0,
        description="logs of at most this many (user, item) pairs are tuned even without --tune "
        "(unless an --als-* parameter is given)",
    )
    eval_holdout_fraction: float = Field(
        0.2, gt=0, lt=1, description="time holdout: the latest share of the interactions"
    )
    eval_max_users: int = Field(10_000, ge=1, description="holdout users evaluated at most")
    tune_rows: int = Field(
        1_000_000, ge=1, description="tuning fits on a sample of users with about this many rows"
    )
    build_dir: Path = Field(
        Path.home() / ".cache" / "annrec" / "build",
        description="where versions for object storage are built before the upload",
    )
