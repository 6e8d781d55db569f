"""Progress bars for long work (builds, quality reports, benchmarks), drawn only where someone
watches: on a terminal, unless `ANNREC_PROGRESS` (or `annrec --progress/--no-progress`, which
sets it for child processes too) says otherwise. A log file or a pipe gets the log lines only,
never a bar's escape sequences."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm

from schemas.keys import ENV_PROGRESS

T = TypeVar("T")
# ANNREC_PROGRESS values -> tqdm's `disable` (None: only on a terminal).
_DISABLE: dict[str, bool | None] = {"auto": None, "on": False, "off": True}


def progress_disabled() -> bool | None:
    """tqdm's `disable` for the ANNREC_PROGRESS setting (auto, on, off; auto when unset)."""
    value = os.environ.get(ENV_PROGRESS, "auto").strip().lower()
    return _DISABLE.get(value)


def progress_bar(
    iterable: Iterable[T] | None = None, *, hidden: bool = False, **kwargs: Any
) -> tqdm[T]:
    """tqdm with the project's default: drawn on a terminal only (`hidden`: never)."""
    return tqdm(iterable, disable=True if hidden else progress_disabled(), **kwargs)
