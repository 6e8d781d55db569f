"""Builder settings: ANNREC_* environment variables, overridable by `annrec build` flags."""

from __future__ import annotations

from pydantic import Field

from schemas.settings import CommonSettings


class BuilderSettings(CommonSettings):
    n_trees: int = Field(50, ge=1, le=1000, description="Annoy trees per index")
    seed: int = 42
    build_jobs: int = Field(-1, description="Annoy build threads; -1 = all cores")
