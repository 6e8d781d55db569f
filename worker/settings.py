"""Worker settings: ANNREC_* environment variables, overridable by `annrec worker` flags."""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

from pydantic import Field

from schemas import keys
from schemas.settings import CommonSettings


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class WorkerSettings(CommonSettings):
    group_id: str = keys.CONSUMER_GROUP
    worker_id: str = Field(default_factory=_default_worker_id)
    batch_size: int = Field(256, ge=1, le=10_000, description="max messages per consume()")
    poll_timeout_s: float = Field(0.5, gt=0, le=1.0, description="<= 1 s keeps shutdown prompt")
    index_poll_interval_s: float = Field(2.0, gt=0)
    verify_checksums: bool = True
    cache_dir: Path = Field(
        Path.home() / ".cache" / "annrec" / "versions",
        description="local copies of versions from object storage",
    )
    retry_backoff_s: float = Field(1.0, gt=0, description="wait after a failed write")
