"""Items added, changed or removed since the last build (the item-vectors topic) folded into the
factors and attributes a version is built from.

A build folds them in by default whenever it reads Kafka (as it folds availability updates), and
records the offsets it read to (manifest item_vectors_through): workers then drop from their
fresh segment what the version holds, so the segment stays small. `annrec build
--no-item-vectors` builds from the input alone (the segment keeps serving the events).

The users' factors are left as trained: an added item is scored against them by its vector, as
the worker's segment scores it. Events of another dimension, or naming an attribute the table
does not have, are skipped (workers dead-lettered them with the reason).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import structlog

from index_builder.attributes import AttributeTable, Column
from index_builder.inputs import Factors
from query_engine.vectors import fold_in, item_gramian
from schemas.events import ItemVector
from schemas.manifest import FALSE, TRUE, UNKNOWN, FoldIn

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Folded:
    factors: Factors
    attributes: AttributeTable | None
    applied: int  # events folded in (upserts and removals of known items)
    skipped: int  # events of another dimension or with unknown attributes


def fold_item_vectors(
    factors: Factors,
    attributes: AttributeTable | None,
    events: Mapping[str, ItemVector],
    fold_in_spec: FoldIn | None = None,
) -> Folded:
    """The factors (and attribute table) with `events` (item id -> its newest event) applied:
    upserted items' rows replaced or appended, removed items' rows dropped. An item given by
    its users gets the ALS item step over their factors with `fold_in_spec`'s regularization
    and alpha, as the worker computes it (worker/fresh.py)."""
    if not events:
        return Folded(factors, attributes, 0, 0)  # no copy of the factors
    given, skipped = _vectors(factors, attributes, events, fold_in_spec)
    usable = {i: e for i, e in events.items() if e.removed or i in given}
    row_of = {str(x): i for i, x in enumerate(factors.item_ids.tolist())}
    removed = {row_of[i] for i, e in usable.items() if e.removed and i in row_of}
    new = [i for i, e in usable.items() if not e.removed and i not in row_of]
    keep = np.setdiff1d(np.arange(len(row_of)), np.fromiter(removed, np.int64, len(removed)))
    # Rows: the kept ones in their order, then the new items in the topic's order.
    vectors = np.concatenate(
        [factors.item_factors[keep], np.zeros((len(new), factors.dim), np.float32)]
    )
    ids = np.concatenate([factors.item_ids[keep].astype(str), np.asarray(new, dtype=str)])
    at = {str(x): i for i, x in enumerate(ids.tolist())}
    for item, event in usable.items():
        if not event.removed:
            vectors[at[item]] = given[item]
    popularity = factors.item_popularity
    if popularity is not None:  # an added item has no interactions yet: ranked last
        popularity = np.concatenate([popularity[keep], np.zeros(len(new))])
    folded_table = None
    if attributes is not None:
        folded_table = AttributeTable(
            len(ids), [_fold_column(c, keep, len(new), at, usable) for c in attributes.columns]
        )
    weights = factors.fold_in
    if weights is not None and weights.item_lengths is not None:
        lengths = np.concatenate([weights.item_lengths[keep], np.zeros(len(new), np.float32)])
        weights = replace(weights, item_lengths=lengths.astype(np.float32))
    out = replace(
        factors,
        item_factors=np.ascontiguousarray(vectors, dtype=np.float32),
        item_ids=ids,
        item_popularity=popularity,
        fold_in=weights,
    )
    applied = sum(1 for i, e in usable.items() if not e.removed or i in row_of)
    log.info(
        "item_vectors_folded", applied=applied, skipped=skipped, removed=len(removed), new=len(new)
    )
    return Folded(out, folded_table, applied, skipped)


def _vectors(
    factors: Factors,
    attributes: AttributeTable | None,
    events: Mapping[str, ItemVector],
    fold_in_spec: FoldIn | None,
) -> tuple[dict[str, npt.NDArray[np.float32]], int]:
    """(each usable upsert's vector, the number of upserts skipped: another dimension, an
    unknown attribute or one of the wrong type, or no known user to fold it in from)."""
    columns = {} if attributes is None else {c.name: c for c in attributes.columns}
    users = {str(x): i for i, x in enumerate(factors.user_ids.tolist())}
    given: dict[str, npt.NDArray[np.float32]] = {}
    gramian = None
    skipped = 0
    for item, event in events.items():
        if event.removed:
            continue
        if event.users is not None:
            rows = [users[u] for u in event.users if u in users]
            if not rows or fold_in_spec is None:
                skipped += 1
                continue
            if gramian is None:
                gramian = item_gramian(factors.user_factors)
            seen = factors.user_factors[rows]
            vector = fold_in(gramian, seen, fold_in_spec.regularization, fold_in_spec.alpha)
        else:
            vector = np.asarray(event.vector, dtype=np.float32)
        if (
            len(vector) != factors.dim
            or not set(event.attributes) <= set(columns)
            or any(
                (columns[name].type == "bool") != isinstance(value, bool)
                for name, value in event.attributes.items()
            )
        ):
            skipped += 1
            continue
        given[item] = vector
    return given, skipped


def _fold_column(
    column: Column,
    keep: np.ndarray,
    added: int,
    at: Mapping[str, int],
    events: Mapping[str, ItemVector],
) -> Column:
    """One attribute over the folded rows: an upsert with attributes sets the item's values
    (those it does not give: none); one without keeps the item's (none for a new item)."""
    missing = UNKNOWN if column.type == "bool" else -1
    codes = np.concatenate([column.codes[keep], np.full(added, missing, np.int32)])
    values = list(column.values)
    for item, event in events.items():
        if event.removed or not event.attributes:
            continue
        value = event.attributes.get(column.name)
        if value is None:
            code = missing
        elif isinstance(value, bool):
            code = TRUE if value else FALSE
        else:
            if value not in values:
                values.append(value)
            code = values.index(value)
        codes[at[item]] = code
    return Column(column.name, column.type, codes.astype(np.int32), values)
