"""A request's filter and allow list evaluated over one version's item attributes.

Evaluation gives a `Selection`: the item rows that pass, as a boolean mask and/or sorted rows
(whichever is cheaper to produce), and their count, from which the planner (filtered.py) picks
its strategy. Pure: no I/O; the attribute arrays come from attributes.py.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from query_engine.attributes import ItemAttributes
from schemas.filters import AllOf, AttrEquals, AttrIn, Filter, NotOf, children

BoolMask = npt.NDArray[np.bool_]
Rows = npt.NDArray[np.int64]


class FilterError(ValueError):
    """A filter this version cannot evaluate: unknown attribute, unknown value, wrong type."""


@dataclass
class Selection:
    """The items passing a filter (and an allow list). Built once per request; `mask` and `rows`
    are produced lazily from each other, so a single `eq` needs no pass over the catalogue."""

    n_items: int
    _mask: BoolMask | None = None
    _rows: Rows | None = None
    _count: int | None = field(default=None)

    @classmethod
    def of_rows(cls, n_items: int, rows: Rows) -> Selection:
        return cls(n_items, _rows=np.asarray(rows, dtype=np.int64))

    @classmethod
    def of_mask(cls, mask: BoolMask) -> Selection:
        return cls(len(mask), _mask=mask)

    @property
    def mask(self) -> BoolMask:
        if self._mask is None:
            mask = np.zeros(self.n_items, dtype=np.bool_)
            mask[self.rows] = True
            self._mask = mask
        return self._mask

    @property
    def rows(self) -> Rows:
        """Passing rows, ascending."""
        if self._rows is None:
            self._rows = np.flatnonzero(self.mask).astype(np.int64)
        return self._rows

    @property
    def count(self) -> int:
        if self._count is None:
            self._count = (
                len(self._rows) if self._rows is not None else int(np.count_nonzero(self.mask))
            )
        return self._count

    @property
    def fraction(self) -> float:
        return self.count / self.n_items if self.n_items else 0.0

    def contains(self, row: int) -> bool:
        if self._mask is not None or self._rows is None:
            return bool(self.mask[row])
        i = int(np.searchsorted(self._rows, row))
        return i < len(self._rows) and int(self._rows[i]) == row

    def passes(self, rows: npt.ArrayLike) -> BoolMask:
        """Which of `rows` pass: a lookup in the mask when there is one, else a binary search
        in the sorted rows (never builds the mask: a request checks a few hundred candidates,
        and a mask costs a pass over the catalogue; callers that will check many rows build
        it first)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._mask is not None or self._rows is None:
            looked_up: BoolMask = self.mask[rows]
            return looked_up
        found = np.searchsorted(self._rows, rows)
        inside = found < len(self._rows)
        hit = np.zeros(len(rows), dtype=np.bool_)
        hit[inside] = self._rows[found[inside]] == rows[inside]
        return hit


def select(
    attributes: ItemAttributes | None,
    flt: Filter | None,
    allow_rows: Rows | None,
    n_items: int,
    known_elsewhere: Set[str] = frozenset(),
) -> Selection | None:
    """The selection of a filter and an allow list; None when the request has neither.
    `known_elsewhere`: "attr=value" pairs these attributes lack but items served beside them
    have (the fresh segment's new values): matched by none of these items, not an error."""
    if flt is None and allow_rows is None:
        return None
    selection = None
    if flt is not None:
        if attributes is None:
            raise FilterError("this version has no item attributes: filters cannot be applied")
        selection = _evaluate(attributes, flt, known_elsewhere)
    if allow_rows is not None:
        allowed = np.unique(np.asarray(allow_rows, dtype=np.int64))
        if selection is None:
            return Selection.of_rows(n_items, allowed)
        return Selection.of_rows(n_items, allowed[selection.passes(allowed)])
    return selection


def _evaluate(attrs: ItemAttributes, f: Filter, elsewhere: Set[str] = frozenset()) -> Selection:
    if isinstance(f, AttrEquals):
        return _leaf(attrs, f.attr, [f.eq], elsewhere)
    if isinstance(f, AttrIn):
        return _leaf(attrs, f.attr, f.in_, elsewhere)
    if isinstance(f, NotOf):
        return Selection.of_mask(~_evaluate(attrs, f.not_, elsewhere).mask)
    parts = [_evaluate(attrs, c, elsewhere) for c in children(f)]
    if len(parts) == 1:
        return parts[0]
    combine = np.logical_and if isinstance(f, AllOf) else np.logical_or
    mask = parts[0].mask.copy()
    for part in parts[1:]:
        combine(mask, part.mask, out=mask)
    return Selection.of_mask(mask)


def _leaf(
    attrs: ItemAttributes,
    name: str,
    values: Sequence[str | bool | int],
    elsewhere: Set[str] = frozenset(),
) -> Selection:
    spec = attrs.spec(name)
    if spec is None:
        known = ", ".join(attrs.names()) or "none"
        raise FilterError(f"unknown attribute {name!r} (this version has: {known})")
    if spec.type == "bool":
        if any(not isinstance(v, bool) for v in values):
            raise FilterError(f"attribute {name!r} is boolean: compare it with true or false")
        return Selection.of_mask(attrs.bool_mask(name, {bool(v) for v in values}))
    if any(isinstance(v, bool) for v in values):
        raise FilterError(f"attribute {name!r} is categorical: compare it with strings")
    # A value only items served beside these have (elsewhere) passes none of these.
    wanted = [str(v) for v in values if f"{name}={v}" not in elsewhere]
    unknown = [v for v in wanted if not attrs.has_value(name, v)]
    if unknown:
        raise FilterError(f"attribute {name!r} has no value {unknown[0]!r} in this version")
    return Selection.of_rows(attrs.n_items, attrs.category_rows(name, wanted))
