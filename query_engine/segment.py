"""The fresh segment: items added, changed or removed since a version was built, served beside it.

An Annoy file cannot take items after it is built, so the items upserted since (the item-vectors
topic) live in a small in-memory matrix scanned exactly, and their exact scores are merged with
the version's answer. Version rows that must not be served are `hidden`: removed items, and
items upserted since the build (their old vector; the new one is scored here). Removed items
are hidden like exclude_items, so they appear in no answer, popularity fill included.

Mutated by the worker's serving thread only, between two batches (as availability is); the
version's own files stay immutable. Pure numpy: no Kafka, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from query_engine.attributes import ItemAttributes
from query_engine.diversity import MaxPer
from query_engine.plan import VersionSearch
from query_engine.segment_neighbours import SegmentNeighbours
from query_engine.segment_order import NormOrder
from query_engine.selection import select
from query_engine.vectors import top_k
from schemas.events import ItemVector
from schemas.filters import Filter
from schemas.manifest import FALSE, TRUE, UNKNOWN, AttributeSpec

FloatArray = npt.NDArray[np.float32]
Rows = npt.NDArray[np.int64]
Ranked = tuple[Rows, FloatArray]
AttributeValues = Mapping[str, str | bool]
G = TypeVar("G", bound=np.generic)


def refusal(event: ItemVector, dim: int, specs: Sequence[AttributeSpec]) -> str | None:
    """Why a version of dimension `dim` with attributes `specs` cannot take this event (None:
    it can). The worker dead-letters an event with this reason and its segment skips it."""
    if event.removed:
        return None
    if event.vector is not None and len(event.vector) != dim:
        return f"vector has {len(event.vector)} values, the version has K={dim}"
    by_name = {s.name: s for s in specs}
    for name, value in event.attributes.items():
        spec = by_name.get(name)
        if spec is None:
            known = ", ".join(sorted(by_name)) or "none"
            return f"unknown attribute {name!r} (the version has: {known})"
        if (spec.type == "bool") != isinstance(value, bool):
            kind = "boolean: true or false" if spec.type == "bool" else "categorical: a string"
            return f"attribute {name!r} is {kind}"
    return None


class Segment:
    """The items of one version's fresh segment: their factors (by local row, a removed one
    kept as a dead row until the next version), attributes, and the version rows hidden."""

    def __init__(self, dim: int, specs: Sequence[AttributeSpec] = ()) -> None:
        self.dim = dim
        self._specs = list(specs)
        self._capacity = 0
        self._factors = np.empty((0, dim), np.float32)
        self._norms = np.empty(0, np.float32)
        # The same rows scaled to length 1, one contiguous block: cosine is one product.
        self._units = np.empty((0, dim), np.float32)
        self._live = np.empty(0, np.bool_)
        # What keeps a request from scanning every row: recommend's norm order (stops at the
        # norm bound); similar items' candidates, found at the upsert (segment_neighbours.py;
        # needs the version's indexes: `upsert(..., search)`).
        self._order = NormOrder(dim)
        self.neighbours = SegmentNeighbours()
        self._dead = 0  # removed rows among them (kept until the next version)
        self.ids: list[str] = []
        self._local: dict[str, int] = {}
        # Per attribute, one code per local row: a category's value index (-1 none; values the
        # version does not know are appended to the segment's own list), a flag's -1/0/1.
        self._codes: dict[str, npt.NDArray[np.int32]] = {s.name: _codes(0) for s in specs}
        self._values: dict[str, list[str]] = {s.name: list(s.values) for s in specs}
        self._attributes: ItemAttributes | None = None  # built from the codes on first use
        self.hidden: set[int] = set()
        self.removed: set[str] = set()  # ids removed (of the version or of the segment)
        self.generation = 0  # changes with every event applied: answers may differ after it

    def __len__(self) -> int:
        """Items served from the segment (upserted and not removed since)."""
        return int(self._live[: len(self.ids)].sum())

    @property
    def size(self) -> int:
        """The items it has events for (upserted, changed or removed): what a build folding it
        in would change; the figure the size bound applies to."""
        return len(self._local) + sum(1 for i in self.removed if i not in self._local)

    def local(self, item_id: str) -> int | None:
        """The live local row of a fresh item (None: not in the segment, or removed)."""
        row = self._local.get(item_id)
        return row if row is not None and self._live[row] else None

    def vector(self, local: int) -> FloatArray:
        row: FloatArray = self._factors[local]
        return row

    def upsert(
        self,
        item_id: str,
        vector: npt.ArrayLike,
        attributes: AttributeValues,
        version_row: int | None,
        search: VersionSearch | None = None,
    ) -> None:
        """Add an item, or replace its vector and attributes (`version_row`: its row in the
        version, now hidden; None for a new item). Validated first (`refusal`). `search`: the
        version's indexes, to find the item's neighbours at the next `settle` rather than per
        request (without it, the item's similar items, and the items it is similar to, are
        found by scans)."""
        row = self._local.get(item_id)
        added = row is None
        if row is None:
            row = len(self.ids)
            self._grow(row + 1)
            self.ids.append(item_id)
            self._local[item_id] = row
        self._factors[row] = np.asarray(vector, dtype=np.float32)
        self._norms[row] = norm = np.linalg.norm(self._factors[row])
        self._units[row] = self._factors[row] / norm if norm > 0 else 0.0
        if not added and not self._live[row]:
            self._dead -= 1  # a removed item upserted again
        self._live[row] = True
        self._order.changed(row)
        if search is not None:
            self.neighbours.queue(row, search)
        else:
            self.neighbours.withdraw(row)
        for name, codes in self._codes.items():
            codes[row] = self._code(name, attributes.get(name))
        self.removed.discard(item_id)
        if version_row is not None:
            self.hidden.add(version_row)
        self._attributes = None
        self.generation += 1

    def remove(self, item_id: str, version_row: int | None) -> None:
        """The item is gone: never served again from the segment or the version."""
        row = self._local.get(item_id)
        if row is not None and self._live[row]:
            self._live[row] = False
            self._dead += 1
            self._order.changed(row)
            self.neighbours.withdraw(row)
        if version_row is not None:
            self.hidden.add(version_row)
        self.removed.add(item_id)
        self.generation += 1

    def settle(self, budget_s: float) -> int:
        """Find the neighbours of the upserted items still waiting, for about `budget_s`
        seconds (segment_neighbours.discover); the number found. Until then requests read them
        all, as a scan of the items that arrived since."""
        n = len(self.ids)
        return self.neighbours.discover(self._factors, self._units[:n], self._live[:n], budget_s)

    def set_flag(self, name: str, item_id: str, value: bool) -> bool:
        """An availability update of a fresh item; True when it changed."""
        row = self._local.get(item_id)
        codes = self._codes.get(name)
        if row is None or codes is None or self._spec(name).type != "bool":
            return False
        new = TRUE if value else FALSE
        if codes[row] == new:
            return False
        codes[row] = new
        self._attributes = None
        self.generation += 1
        return True

    def recommend(
        self,
        query: FloatArray,
        k: int,
        keep: npt.NDArray[np.bool_] | None = None,
        exclude: Iterable[str] = (),
        floor: float = -np.inf,
        exact: bool = False,
    ) -> tuple[list[str], list[float]]:
        """The k fresh items with the largest inner product with `query` scoring above `floor`
        (the k-th score of the answer they are merged into), best first: the norm-ordered scan
        that stops at the bound (query_engine/segment_order.py), or every row (`exact`)."""
        n = len(self.ids)
        if exact:
            scores = np.asarray(self._factors[:n] @ query, dtype=np.float32)  # its own array
            return self._best(scores, k, keep, exclude, floor)
        if self._order.outdated():
            self._order.sort(self._factors[:n], self._norms[:n], self._live[:n])
        rows, scores = self._order.top(self._factors, query, k, floor, self._allowed(keep, exclude))
        return [self.ids[r] for r in rows.tolist()], scores.tolist()

    def similar(
        self,
        query: FloatArray,
        k: int,
        keep: npt.NDArray[np.bool_] | None = None,
        exclude: Iterable[str] = (),
        floor: float = -np.inf,
        subject: int | None = None,
        exact: bool = False,
    ) -> tuple[list[str], list[float]]:
        """The k fresh items with the largest cosine with `query` scoring above `floor`, best
        first. `subject`: the asked item's key (a version row, or key_of_fresh(local)): when
        `floor` lets it, only the candidates found at the upserts are read (segment_neighbours);
        else, or `exact`, every row is scanned."""
        hit = None
        if subject is not None and not exact:
            hit = self.neighbours.above(subject, floor, self._units, query)
        if hit is not None:
            if not hit:
                return [], []
            allowed = self._allowed(keep, exclude)
            if allowed is not None:
                ok = allowed(np.asarray([r for _, r in hit], np.int64)).tolist()
                hit = [e for e, yes in zip(hit, ok, strict=True) if yes]
            del hit[k:]
            return [self.ids[r] for _, r in hit], [c for c, _ in hit]
        n = len(self.ids)
        norm = float(np.linalg.norm(query))
        unit = query / norm if norm > 0 else query
        return self._best(np.asarray(self._units[:n] @ unit, np.float32), k, keep, exclude, floor)

    def value_codes(self, attr: str, ids: Sequence[str]) -> npt.NDArray[np.int32]:
        """The value index of a categorical attribute for fresh items (-1: none), in the
        version's numbering (values only the segment has come after the version's)."""
        codes = self._codes[attr]
        return np.asarray([codes[self._local[i]] for i in ids], np.int32)

    def passing(
        self, flt: Filter | None, allow_items: Sequence[str] | None
    ) -> npt.NDArray[np.bool_] | None:
        """Which local rows pass a request's filter and allow list (None: it has neither).
        Raises selection.FilterError as the version's own evaluation does."""
        if flt is None and allow_items is None:
            return None  # most requests: no attributes built, no evaluation
        allow = None
        if allow_items is not None:
            allow = np.asarray(
                [r for i in allow_items if (r := self._local.get(i)) is not None], np.int64
            )
        attributes = self.attributes() if self._specs else None
        selection = select(attributes, flt, allow, len(self.ids))
        return None if selection is None else selection.mask

    def new_values(self) -> set[str]:
        """ "attr=value" of the category values only the segment's items have (a new brand):
        the version's filter evaluation matches none of its items by them
        (selection.select's known_elsewhere) instead of refusing the filter."""
        out = set()
        for spec in self._specs:
            out |= {f"{spec.name}={v}" for v in self._values[spec.name][len(spec.values) :]}
        return out

    def attributes(self) -> ItemAttributes:
        """The segment's attributes as a version's (the same filter evaluation applies)."""
        if self._attributes is None:
            n = len(self.ids)
            specs, arrays = [], {}
            for spec in self._specs:
                codes = self._codes[spec.name][:n]
                if spec.type == "bool":
                    arrays[spec.rows_file] = codes.astype(np.int8)
                    specs.append(spec)
                    continue
                values = self._values[spec.name]
                order = np.argsort(codes, kind="stable")
                order = order[codes[order] >= 0]
                counts = np.bincount(codes[order], minlength=len(values))
                arrays[spec.rows_file] = order.astype(np.int32)
                arrays[spec.offsets_file or ""] = np.concatenate(([0], np.cumsum(counts)))
                specs.append(spec.model_copy(update={"values": values}))
            self._attributes = ItemAttributes.from_arrays(specs, n, arrays)
        return self._attributes

    def _allowed(
        self, keep: npt.NDArray[np.bool_] | None, exclude: Iterable[str]
    ) -> Callable[[Rows], npt.NDArray[np.bool_]] | None:
        """Which local rows may be returned: live, passing `keep`, not excluded. None: every
        row may (none removed, no filter, nothing excluded), so a request checks none."""
        excluded = [r for i in exclude if (r := self._local.get(i)) is not None] if exclude else []
        if not self._dead and keep is None and not excluded:
            return None

        def allowed(rows: Rows) -> npt.NDArray[np.bool_]:
            ok = self._live[rows]
            if keep is not None:
                ok &= keep[rows]
            if excluded:
                ok &= ~np.isin(rows, excluded)
            return ok

        return allowed

    def _best(
        self,
        scores: FloatArray,
        k: int,
        keep: npt.NDArray[np.bool_] | None,
        exclude: Iterable[str],
        floor: float = -np.inf,
    ) -> tuple[list[str], list[float]]:
        # What may not be returned scores -inf in place (`scores` is this call's own array): no
        # index arrays over the whole segment per request.
        n = len(self.ids)
        if self._dead:
            scores[~self._live[:n]] = -np.inf
        if keep is not None:
            scores[~keep] = -np.inf
        for item_id in exclude:
            row = self._local.get(item_id)
            if row is not None:
                scores[row] = -np.inf
        best = top_k(scores, min(k, n))
        best = best[scores[best] > floor]
        return [self.ids[r] for r in best.tolist()], scores[best].tolist()

    def _grow(self, n: int) -> None:
        if n <= self._capacity:
            return
        capacity = max(64, 2 * self._capacity, n)
        self._factors = _resized(self._factors, capacity)
        self._norms = _resized(self._norms, capacity)
        self._units = _resized(self._units, capacity)
        self._live = _resized(self._live, capacity)
        self._codes = {name: _resized(c, capacity, -1) for name, c in self._codes.items()}
        self._capacity = capacity

    def _spec(self, name: str) -> AttributeSpec:
        return next(s for s in self._specs if s.name == name)

    def _code(self, name: str, value: str | bool | None) -> int:
        if value is None:
            return UNKNOWN if self._spec(name).type == "bool" else -1
        if isinstance(value, bool):
            return TRUE if value else FALSE
        values = self._values[name]
        try:
            return values.index(value)
        except ValueError:
            values.append(value)  # a value the version does not know yet (a new brand)
            return len(values) - 1


def _codes(n: int) -> npt.NDArray[np.int32]:
    return np.full(n, -1, np.int32)


def _resized(a: npt.NDArray[G], n: int, fill: int = 0) -> npt.NDArray[G]:
    out = np.full((n, *a.shape[1:]), fill, dtype=a.dtype)
    out[: len(a)] = a
    return out


def past_hidden(search: Callable[[int], Ranked], fetch: int, hidden: set[int]) -> Ranked:
    """The version's answer for `fetch` results that are not hidden: `search(n)` asked again
    with more while hidden rows took places in it (the index knows nothing of the segment)."""
    wanted = fetch
    while True:
        rows, scores = search(fetch)
        if not hidden:
            return rows, scores
        taken = sum(1 for r in rows.tolist() if r in hidden)
        if len(rows) - taken >= wanted or len(rows) < fetch:
            return rows, scores
        fetch = max(2 * fetch, wanted + 2 * taken)


@dataclass
class Draft:
    """An answer before its reply items are built: each built item costs pydantic's validation
    (~1 us), so the fresh items are merged into plain lists and the items built once, after.
    `ids`, `scores`: ranked by score, best first; `filled`: (id, score or None) from the
    popularity list, after them."""

    ids: list[str]
    scores: list[float]
    filled: list[tuple[str, float | None]] = field(default_factory=list)

    def kth_score(self, k: int) -> float:
        """The k-th ranked score (-inf when fewer are ranked): what an item must beat to enter."""
        return self.scores[k - 1] if len(self.scores) >= k else -np.inf


def merged(draft: Draft, fresh_ids: Sequence[str], fresh_scores: Sequence[float], k: int) -> Draft:
    """The version's answer and the fresh items by score, best first, k of them (on a tie the
    version's first); items filled from the popularity list (no rank of their own) come last,
    only where k is not reached. Both sides come best first: the fresh items are inserted
    into the version's list, a few steps each, where sorting both cost ~5 us a request. In a
    request the version's answer and the fresh items are a few each: list operations, no sets
    (this runs for each answer a fresh item enters, ~9% of them at 1M + 10,000)."""
    ids, scores = draft.ids[:], draft.scores[:]
    for item_id in fresh_ids:
        if item_id in ids:  # the same item's new vector: the fresh one counts
            kept = [j for j, i in enumerate(ids) if i not in fresh_ids]
            ids, scores = [ids[j] for j in kept], [scores[j] for j in kept]
            break
    at = 0
    for item_id, score in zip(fresh_ids, fresh_scores, strict=True):
        n = len(scores)
        while at < n and scores[at] >= score:
            at += 1
        ids.insert(at, item_id)
        scores.insert(at, score)
        at += 1
    del ids[k:], scores[k:]
    filled = draft.filled
    if filled:
        chosen = set(ids)
        filled = [f for f in filled if f[0] not in chosen][: k - len(ids)]
    return Draft(ids, scores, filled)


def merged_within(
    draft: Draft,
    codes: npt.NDArray[np.int32],
    fresh_ids: Sequence[str],
    fresh_scores: Sequence[float],
    fresh_codes: npt.NDArray[np.int32],
    n: int,
    k: int,
) -> Draft:
    """merged() under max_per: the greedy walk (query_engine/diversity.py), at most n items of
    a value, over the version's answer under the constraint (`codes`: the values of its ranked
    items, then of its filled ones) and the fresh items above its k-th score, by score. Exact
    over both: an item the walk over everything takes is taken by the walk over its own side
    (each side's items of a value above it are as many as the whole's, or more), so the union
    of the two sides' answers holds the whole answer; and no fresh item at or below the
    version's k-th score can displace one (the walk's i-th score only grows when items are
    added). Filled items come last, counted by the walk too."""
    taken = set(fresh_ids)
    values = codes.tolist()
    ranked = [
        (i, s, values[j])
        for j, (i, s) in enumerate(zip(draft.ids, draft.scores, strict=True))
        if i not in taken
    ]
    ranked += zip(fresh_ids, fresh_scores, fresh_codes.tolist(), strict=True)
    ranked.sort(key=lambda p: -p[1])  # stable: on a tie the version's first
    filled = [
        (i, s, values[len(draft.ids) + j])
        for j, (i, s) in enumerate(draft.filled)
        if i not in taken
    ]
    walk = MaxPer(np.asarray([c for *_, c in [*ranked, *filled]], np.int32), n)
    picked = walk.pick(np.arange(len(ranked) + len(filled)), k).tolist()
    taken_ranked = [ranked[j] for j in picked if j < len(ranked)]
    return Draft(
        [i for i, _, _ in taken_ranked],
        [s for _, s, _ in taken_ranked],
        [filled[j - len(ranked)][:2] for j in picked if j >= len(ranked)],
    )
