"""Builder settings: ANNREC_* environment variables, overridable by `annrec build` flags."""

from __future__ import annotations

from pydantic import Field

from schemas.settings import CommonSettings


class BuilderSettings(CommonSettings):
    n_trees: int = Field(50, ge=1, le=1000, description="Annoy trees per index")
    seed: int = 42
    build_jobs: int = Field(-1, description="Annoy build threads; -1 = all cores")
    target_recall: float = Field(
        0.95, gt=0, le=1, description="recall@10 that search_k is tuned for"
    )
    min_recall: float = Field(0.8, ge=0, le=1, description="below this a build is not published")
