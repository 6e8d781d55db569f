"""Item attribute tables (CSV or Parquet) -> validated columns -> the version's attribute files.

A table has an `item_id` column and one column per attribute. A column is boolean when every
non-empty value is true/false (CSV, any case) or its Parquet type is bool; otherwise categorical
(values kept as strings; integers become their decimal text). Floats are refused: bucket them
first. Items missing from the table, or with an empty cell, have no value (they pass no `eq`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from schemas import manifest as mf
from schemas.errors import InvalidInput
from schemas.manifest import FALSE, TRUE, UNKNOWN

ID_COLUMNS = ("item_id", "id")
_NAME_RE = re.compile(mf.ATTRIBUTE_NAME_PATTERN)
_BOOL_TEXT = {"true": True, "false": False}


@dataclass
class Column:
    """One attribute over the version's item rows."""

    name: str
    type: Literal["category", "bool"]
    codes: npt.NDArray[np.int32]  # category: value index, -1 none; bool: -1/0/1 (int32 too)
    values: list[str] = field(default_factory=list)


@dataclass
class AttributeTable:
    n_items: int
    columns: list[Column]

    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def apply_updates(
        self, updates: Mapping[tuple[str, str], bool], item_ids: Sequence[str]
    ) -> int:
        """Fold availability updates ((attribute, item id) -> value) into boolean columns;
        returns how many applied (updates of unknown items or attributes are ignored)."""
        rows = {str(x): i for i, x in enumerate(item_ids)}
        flags = {c.name: c for c in self.columns if c.type == "bool"}
        applied = 0
        for (name, item), value in updates.items():
            if name in flags and item in rows:
                flags[name].codes[rows[item]] = TRUE if value else FALSE
                applied += 1
        return applied


def read_table(path: Path, item_ids: Sequence[str]) -> AttributeTable:
    """Read and validate an attribute table against the version's item ids."""
    if not path.is_file():
        raise InvalidInput(f"attribute table {path} does not exist")
    if path.suffix == ".parquet":
        raw, bools = _read_parquet(path)
    elif path.suffix == ".csv":
        raw, bools = _read_csv(path), set()
    else:
        raise InvalidInput(f"attribute table {path}: expected .csv or .parquet")
    return table_from_columns(raw, item_ids, bools, str(path))


def table_from_columns(
    raw: Mapping[str, Sequence[object]],
    item_ids: Sequence[str],
    bool_columns: set[str] | frozenset[str] = frozenset(),
    source: str = "attribute table",
) -> AttributeTable:
    id_column = next((c for c in ID_COLUMNS if c in raw), None)
    if id_column is None:
        raise InvalidInput(f"{source}: no item_id column (columns: {', '.join(raw)})")
    ids = [_text(v) for v in raw[id_column]]
    rows = {str(x): i for i, x in enumerate(item_ids)}
    unknown = [i for i in ids if i not in rows]
    if unknown:
        raise InvalidInput(
            f"{source}: {len(unknown)} item ids are not in the factors (first: {unknown[:3]})"
        )
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InvalidInput(f"{source}: item id {dup!r} appears more than once")
    where = np.array([rows[i] for i in ids], dtype=np.int64)
    columns = [
        _column(name, values, where, len(item_ids), name in bool_columns, source)
        for name, values in raw.items()
        if name != id_column
    ]
    if not columns:
        raise InvalidInput(f"{source}: no attribute columns besides {id_column}")
    return AttributeTable(len(item_ids), columns)


def write_attributes(table: AttributeTable, directory: Path) -> list[mf.AttributeSpec]:
    """Write each column's files (plain .npy, no pickle); their specs for the manifest."""
    specs = []
    for c in table.columns:
        rows_file, offsets_file = mf.attribute_files(c.name, c.type)
        if c.type == "bool":
            np.save(directory / rows_file, c.codes.astype(np.int8))
            counts = [int((c.codes == FALSE).sum()), int((c.codes == TRUE).sum())]
        else:
            known = c.codes >= 0
            # A stable sort by value keeps rows ascending within each value.
            order = np.argsort(c.codes[known], kind="stable")
            np.save(directory / rows_file, np.flatnonzero(known)[order].astype(np.int32))
            per_value = np.bincount(c.codes[known], minlength=len(c.values))
            offsets = np.concatenate([[0], np.cumsum(per_value)]).astype(np.int64)
            np.save(directory / (offsets_file or ""), offsets)
            counts = per_value.astype(int).tolist()
        specs.append(
            mf.AttributeSpec(
                name=c.name,
                type=c.type,
                values=c.values,
                rows_file=rows_file,
                offsets_file=offsets_file,
                counts=counts,
            )
        )
    return specs


def _column(
    name: str,
    values: Sequence[object],
    where: npt.NDArray[np.int64],
    n: int,
    is_bool: bool,
    src: str,
) -> Column:
    if not _NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"{src}: attribute name {name!r} must match {mf.ATTRIBUTE_NAME_PATTERN} "
            "(lower case, digits, underscores)"
        )
    if any(isinstance(v, float) for v in values):
        raise InvalidInput(f"{src}: column {name!r} holds numbers; attributes are categorical")
    texts = [_text(v) for v in values]
    codes = np.full(n, UNKNOWN, dtype=np.int32)
    present = [t != "" for t in texts]
    if is_bool or (any(present) and all(t.lower() in _BOOL_TEXT for t in texts if t)):
        flags = [_BOOL_TEXT.get(t.lower()) for t in texts]
        codes[where] = [UNKNOWN if f is None else (TRUE if f else FALSE) for f in flags]
        return Column(name, "bool", codes)
    distinct = sorted({t for t in texts if t})
    if len(distinct) > mf.MAX_CATEGORY_VALUES:
        raise InvalidInput(
            f"{src}: column {name!r} has {len(distinct)} values (at most {mf.MAX_CATEGORY_VALUES})"
        )
    index = {v: i for i, v in enumerate(distinct)}
    codes[where] = [index[t] if t else UNKNOWN for t in texts]
    return Column(name, "category", codes, distinct)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def _read_csv(path: Path) -> dict[str, list[object]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames:
            raise InvalidInput(f"{path}: empty attribute table")
        out: dict[str, list[object]] = {name: [] for name in reader.fieldnames}
        for line, record in enumerate(reader, start=2):
            if None in record or any(v is None for v in record.values()):
                raise InvalidInput(f"{path}:{line}: wrong number of fields")
            for name, value in record.items():
                out[name].append(value)
    return out


def _read_parquet(path: Path) -> tuple[dict[str, list[object]], set[str]]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pyarrow comes with annrec[train]
        raise InvalidInput("reading Parquet needs pyarrow: pip install 'annrec[train]'") from exc
    table = pq.read_table(path)
    bools = {f.name for f in table.schema if pa.types.is_boolean(f.type)}
    return {name: table.column(name).to_pylist() for name in table.column_names}, bools
