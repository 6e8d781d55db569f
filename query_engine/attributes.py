"""Item attributes of one version, in memory: what filters are evaluated against.

Stored as plain .npy arrays (no pickle; adapters.index_files reads them), one id array per
categorical value and one int8 per item for boolean attributes (layout: manifest.AttributeSpec).
Boolean attributes are mutable in memory so availability updates (the item-updates topic) apply
without a rebuild; only the serving thread writes them, between batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.errors import IndexRejected
from schemas.manifest import FALSE, TRUE, UNKNOWN, AttributeSpec


@dataclass
class _Category:
    spec: AttributeSpec
    value_index: dict[str, int]
    rows: npt.NDArray[np.int32]
    offsets: npt.NDArray[np.int64]
    codes: npt.NDArray[np.int32] | None = None  # value index per item row, built on first use


@dataclass
class _Flag:
    spec: AttributeSpec
    state: npt.NDArray[np.int8]  # writable copy: updates land here


class ItemAttributes:
    """Attribute arrays by name, validated against the manifest when loaded."""

    def __init__(
        self, n_items: int, categories: Sequence[_Category], flags: Sequence[_Flag]
    ) -> None:
        self.n_items = n_items
        self._categories = {c.spec.name: c for c in categories}
        self._flags = {f.spec.name: f for f in flags}

    @classmethod
    def from_arrays(
        cls,
        specs: Sequence[AttributeSpec],
        n_items: int,
        arrays: Mapping[str, npt.NDArray[Any]],
    ) -> ItemAttributes:
        """Attributes from their arrays by file name (adapters.index_files reads them), checked
        against the manifest's specs: IndexRejected names the first that does not fit."""
        categories, flags = [], []
        for spec in specs:
            if spec.type == "bool":
                state = arrays[spec.rows_file]
                if state.shape != (n_items,) or not np.isin(state, (UNKNOWN, FALSE, TRUE)).all():
                    raise IndexRejected(f"{spec.rows_file}: not one -1/0/1 per item")
                flags.append(_Flag(spec, state.copy()))
                continue
            rows = arrays[spec.rows_file]
            offsets = arrays[spec.offsets_file or ""]
            if (
                offsets.shape != (len(spec.values) + 1,)
                or offsets[0] != 0
                or offsets[-1] != len(rows)
                or (np.diff(offsets) < 0).any()
                or (len(rows) and (rows.min() < 0 or rows.max() >= n_items))
            ):
                raise IndexRejected(f"attribute {spec.name}: rows/offsets do not match the spec")
            index = {v: i for i, v in enumerate(spec.values)}
            categories.append(_Category(spec, index, rows, offsets))
        return cls(n_items, categories, flags)

    def names(self) -> list[str]:
        return sorted([*self._categories, *self._flags])

    def spec(self, name: str) -> AttributeSpec | None:
        found = self._categories.get(name) or self._flags.get(name)
        return None if found is None else found.spec

    def has_value(self, name: str, value: str) -> bool:
        return value in self._categories[name].value_index

    def category_rows(self, name: str, values: Sequence[str]) -> npt.NDArray[np.int64]:
        """Rows having any of `values` (known values), ascending."""
        c = self._categories[name]
        parts = []
        for value in dict.fromkeys(values):
            i = c.value_index[value]
            parts.append(c.rows[c.offsets[i] : c.offsets[i + 1]])
        rows = np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)
        return np.sort(rows) if len(parts) > 1 else rows

    def value_codes(self, name: str) -> npt.NDArray[np.int32]:
        """A categorical attribute as one value index per item row (-1: no value): what a
        `max_per` request counts by. Built on first use (4 bytes per item), then kept."""
        c = self._categories[name]
        if c.codes is None:
            codes = np.full(self.n_items, -1, dtype=np.int32)
            sizes = np.diff(c.offsets)
            codes[c.rows] = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
            c.codes = codes
        return c.codes

    def bool_mask(self, name: str, values: Iterable[bool]) -> npt.NDArray[np.bool_]:
        state = self._flags[name].state
        wanted = sorted({TRUE if v else FALSE for v in values})
        mask: npt.NDArray[np.bool_] = state == wanted[0] if len(wanted) == 1 else state != UNKNOWN
        return mask

    def values_of(self, row: int) -> dict[str, str | bool]:
        """One item's attribute values by name (those it has): what an upsert of the item
        without attributes of its own keeps (query_engine/segment.py)."""
        out: dict[str, str | bool] = {}
        for name, c in self._categories.items():
            code = int(self.value_codes(name)[row])
            if code >= 0:
                out[name] = c.spec.values[code]
        for name, f in self._flags.items():
            if f.state[row] != UNKNOWN:
                out[name] = bool(f.state[row] == TRUE)
        return out

    def is_flag(self, name: str) -> bool:
        return name in self._flags

    def set_flag(self, name: str, row: int, value: bool) -> bool:
        """Set one item's boolean attribute; True when it changed."""
        state = self._flags[name].state
        new = TRUE if value else FALSE
        if state[row] == new:
            return False
        state[row] = new
        return True
