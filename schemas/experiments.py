"""An experiment: a model's traffic split between its LATEST and candidate versions.

Stored beside the model's LATEST (<model root>/EXPERIMENT, schemas/layout.py), so every worker
reads the same state the same way; a worker applies a change between two batches. Which arm a
request falls in is part of the contract (`Experiment.arm_for`): a stable hash of the user, so a
user stays in one arm for the life of the experiment, on every worker and across restarts, and
anyone (an analysis job, a dashboard) can compute it from the user id alone.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.manifest import MODEL_PATTERN, VERSION_PATTERN

ARM_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
CONTROL = "control"
# Shares are given in percent on the command line and stored as fractions; their sum must be
# 1 within this (0.1 + 0.2 is not 0.3 in binary).
SHARE_TOLERANCE = 1e-9


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Arm(_Model):
    name: str = Field(pattern=ARM_PATTERN, description="the variant a reply names")
    version: str | None = Field(
        None,
        pattern=VERSION_PATTERN,
        description="the version this arm serves; null: the model's LATEST (the control arm, "
        "which follows LATEST if it moves during the experiment)",
    )
    share: float = Field(gt=0, le=1, description="fraction of the assigned users")


class Experiment(_Model):
    name: str = Field(
        pattern=ARM_PATTERN, description="also salts the hash: a new experiment draws a new split"
    )
    model: str = Field(pattern=MODEL_PATTERN)
    arms: list[Arm] = Field(min_length=2, max_length=16)
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must differ: {names}")
        controls = [a for a in self.arms if a.version is None]
        if len(controls) != 1:
            raise ValueError("exactly one arm serves LATEST (version null): the control")
        versions = [a.version for a in self.arms if a.version is not None]
        if len(set(versions)) != len(versions):
            raise ValueError("two arms serve the same version")
        total = sum(a.share for a in self.arms)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise ValueError(f"shares sum to {total}, not 1")
        return self

    @property
    def candidates(self) -> list[str]:
        """The versions the candidate arms serve (the control serves LATEST)."""
        return [a.version for a in self.arms if a.version is not None]

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(name)

    def arm_for(self, key: str) -> Arm:
        """The arm of a user (user_id, or the request's `subject`): the first 8 bytes of
        sha256(experiment name, key) as a fraction of 2^64, against the arms' cumulative shares
        in their stored order."""
        digest = hashlib.sha256(f"{self.name}\x1f{key}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64
        edge = 0.0
        for a in self.arms:
            edge += a.share
            if point < edge:
                return a
        return self.arms[-1]  # the shares' rounding left the last sliver


class Pins(_Model):
    """Versions `annrec versions pin` registered: held by every worker (a pinned request is
    answered without loading it first) and never removed by `versions gc`."""

    versions: list[Annotated[str, Field(pattern=VERSION_PATTERN)]] = Field(
        default_factory=list, max_length=64
    )
