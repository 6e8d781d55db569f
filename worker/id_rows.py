"""Id -> row lookup over a version's id array, without a Python object per id.

A dict of a million str keys takes 0.6 s of pure-Python work to build and holds the GIL all
along: built by the loader thread beside serving, it starves the serving thread (`annrec bench
load` measures query latency while a version loads beside serving, BENCHMARKS.md), and freeing
the old one at a swap pauses serving again. It also costs ~100 MB per million ids, twice over
during a swap. Here the ids stay one numpy array, sorted once (a stable argsort in C: ~50 ms at
1M) and searched by bisection: ~4 us per single lookup; lists of ids go in one vectorized call.

A key longer than the array's fixed width is no stored id, and is answered without a search:
numpy would compare it by widening the whole array to the key's width, a copy of every id per
lookup (23-48 ms at 1M ids, O(n)). Every upsert of a new item looks its id up (is it a version
item?), and new ids are longer than the old ones ("fresh-..." against "i123456"): at 100
upserts/s a 1M worker spent its whole thread copying the id array and fell seconds behind
(`annrec bench freshness`, BENCHMARKS.md).
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
        self._width = self._sorted.dtype.itemsize // 4  # characters (UTF-32 code units)

    def get(self, key: str, default: int | None = None) -> int | None:  # type: ignore[override]
        if len(key) > self._width:  # no stored id is this long (module docstring: no copy)
            return default
        # searchsorted compares against the array's fixed-width strings; the match is
        # confirmed by equality, never assumed.
        pos = int(np.searchsorted(self._sorted, np.asarray(key, self._sorted.dtype)))
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
        # Keys longer than any stored id are unknown, the others searched for at the stored
        # width: a wider array would widen (copy) the stored one (module docstring).
        fits = np.flatnonzero(np.char.str_len(wanted) <= self._width)  # numpy 1.26 too
        fitting = wanted[fits].astype(self._sorted.dtype)
        pos = np.searchsorted(self._sorted, fitting)
        match = pos < len(self._sorted)
        match[match] = self._sorted[pos[match]] == fitting[match]
        found = np.zeros(len(keys), dtype=bool)
        found[fits[match]] = True
        unknown = [keys[i] for i in np.flatnonzero(~found).tolist()]
        return self._order[pos[match]].astype(np.int64), unknown
