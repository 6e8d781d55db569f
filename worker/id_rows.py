"""Id -> row lookup over a version's id array, without a Python object per id.

A dict of a million str keys takes 0.6 s of pure-Python work to build and holds the GIL all
along: built by the loader thread beside serving, it starves the serving thread (`annrec bench
load` measures query latency while a version loads beside serving, BENCHMARKS.md), and freeing
the old one at a swap pauses serving again. It also costs ~100 MB per million ids, twice over
during a swap. Here the ids stay one numpy array, sorted once (a stable argsort in C: ~50 ms at
1M) and searched by bisection: ~4 us per single lookup; lists of ids go in one vectorized call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import numpy.typing as npt


class DuplicateIds(ValueError):
    """Two rows share an id: which row answers for it would be arbitrary."""


class IdRows(Mapping[str, int]):
    """Read-only mapping id -> row of `ids` (row = position in the array)."""

    def __init__(self, ids: npt.NDArray[np.str_]) -> None:
        ids = np.asarray(ids)
        if ids.dtype.kind != "U":
            ids = ids.astype(str)
        self._order = np.argsort(ids, kind="stable")
        self._sorted = ids[self._order]
        same = np.flatnonzero(self._sorted[1:] == self._sorted[:-1])
        if len(same):
            at = int(same[0])
            rows = sorted(int(r) for r in self._order[at : at + 2])
            raise DuplicateIds(f"duplicate id {str(self._sorted[at])!r} at rows {rows}")

    def get(self, key: str, default: int | None = None) -> int | None:  # type: ignore[override]
        # searchsorted compares against the array's fixed-width strings; a longer key may land
        # beside a prefix of itself, so the match is confirmed by equality, never assumed.
        pos = int(np.searchsorted(self._sorted, key))
        if pos < len(self._sorted) and self._sorted[pos] == key:
            return int(self._order[pos])
        return default

    def __getitem__(self, key: str) -> int:
        row = self.get(key)
        if row is None:
            raise KeyError(key)
        return row

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __len__(self) -> int:
        return len(self._sorted)

    def __iter__(self) -> Iterator[str]:
        return iter(self._sorted.tolist())

    def rows(self, keys: Sequence[str]) -> tuple[npt.NDArray[np.int64], list[str]]:
        """(rows of the known keys in the order given, the unknown keys): one vectorized search
        for the whole list (an allow list may hold 10,000 ids)."""
        if not keys:
            return np.empty(0, dtype=np.int64), []
        wanted = np.asarray(keys, dtype=str)
        pos = np.searchsorted(self._sorted, wanted)
        inside = pos < len(self._sorted)
        found = np.zeros(len(wanted), dtype=bool)
        found[inside] = self._sorted[pos[inside]] == wanted[inside]
        unknown = [keys[i] for i in np.flatnonzero(~found).tolist()]
        return self._order[pos[found]].astype(np.int64), unknown
