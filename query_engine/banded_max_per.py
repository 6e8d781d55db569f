"""user -> items under `max_per`, in one walk over the norm bands (query_engine/banded.py).

Over-fetching the plain answer and walking it (query_engine/diversity.py `top_k`) pays for a new
band search each time the prefix was too crowded; measured at 1M (BENCHMARKS.md, max_per) that
cost 1.5-4.3x the request without max_per at p99. Here the constraint is counted inside the band
search instead:

- each band is a source of candidates in decreasing score order with an upper bound on what it
  has not returned yet: an unopened band its norm bound (bound_factor x max norm x ||q||, as the
  plain search prunes by), an exact band the next score of its scan, a tree band the score of
  the last item its index returned (the rest of the band scores lower, as far as the index
  knows);
- the candidates found so far are walked greedily (at most n per value, exact scores): only the
  k admitted ones are kept, since an item the walk skips or ranks past k now never enters the
  answer later (items found later only raise the k-th admitted score, and an item's blockers
  stay);
- the source with the highest bound is asked for more (the next band opened, or an opened one
  asked for WIDEN_FACTOR x more) until k items are admitted and no source can beat the k-th.

An unconstrained-looking query thus costs what the plain search costs; a crowded one reads
deeper into the bands that hold its answer, instead of searching every band again. A tree band
widened WIDEN_ROUNDS times is scanned exactly from then on: a constraint that cannot be met (too
few values) ends on an exact walk of the whole catalogue, and fewer than k items only when no
more meet it. With every band exact, or search_k -1, the answer is the exact constrained top-k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from query_engine.banded import BAND_OVERFETCH, Band, NormBands, band_search_k
from query_engine.diversity import MaxPer
from query_engine.filtered import WIDEN_FACTOR, WIDEN_ROUNDS

Rows = npt.NDArray[np.int64]
Ranked = tuple[Rows, npt.NDArray[np.float32]]
# (minus the exact score, norm-ordered position, item row, value code): what the greedy walk
# reads; a plain tuple sort puts the best first, ties by position.
Candidate = tuple[float, int, int, int]


@dataclass
class _Source:
    """One band's candidates, best first, handed out in growing chunks."""

    band: Band
    exact: bool
    wanted: int  # candidates asked of it so far
    bound: float = math.inf  # the best score of an item it has not handed out (-inf: none)
    widened: int = 0
    seen: set[int] = field(default_factory=set)  # positions handed out
    scores: npt.NDArray[np.float32] | None = None  # an exact band's whole scan, kept

    @property
    def size(self) -> int:
        return self.band.stop - self.band.start


def max_inner_product(
    bands: NormBands,
    query: npt.NDArray[np.float32],
    k: int,
    max_per: MaxPer,
    excluded: Rows,
    search_k: int = -1,
    exact_items: int = 0,
    bound_factor: float = 1.0,
) -> Ranked:
    """The best k items under `max_per` by inner product with `query`, never one of `excluded`,
    best first with exact scores. `search_k`, `exact_items` and `bound_factor` as for
    banded.max_inner_product (the plan's); fewer than k only when no more items meet the
    constraint."""
    q = np.asarray(query, dtype=np.float32)
    q_norm = math.sqrt(max(float(q @ q), 0.0))
    slack = 1e-4 * q_norm * bands.bands[0].max_norm  # as banded.max_inner_product
    walk = _Walk(bands, q, [*q.tolist(), 0.0], q_norm, search_k, k, max_per, excluded)
    opened: list[_Source] = []
    while True:
        kth = -walk.admitted[k - 1][0] if len(walk.admitted) >= k else -math.inf
        spare = [s for s in opened if s.bound > -math.inf]
        deepest = max(spare, key=_bound, default=None)  # the opened band that may hold most
        deeper = -math.inf if deepest is None else deepest.bound
        following = bands.bands[len(opened)] if len(opened) < len(bands.bands) else None
        ahead = -math.inf if following is None else bound_factor * following.max_norm * q_norm
        if following is None and deepest is None:
            break  # every band handed out all it holds: fewer than k meet the constraint
        if len(walk.admitted) >= k and max(ahead, deeper) < kth - slack:
            break  # nothing left anywhere can beat the k-th admitted item
        if following is not None and (ahead >= deeper or not opened):
            opened.append(_Source(following, following.stop <= exact_items, k * BAND_OVERFETCH))
            walk.take(opened[-1])
        elif deepest is not None:
            deepest.wanted *= WIDEN_FACTOR
            deepest.widened += 1
            if deepest.widened > WIDEN_ROUNDS:
                deepest.exact = True  # the index has had its rounds: scan the band
            walk.take(deepest)
    rows = np.array([c[2] for c in walk.admitted], dtype=np.int64)
    return rows, -np.array([c[0] for c in walk.admitted], dtype=np.float32)


def _bound(source: _Source) -> float:
    return source.bound


@dataclass
class _Walk:
    """The query, and the items the greedy walk has admitted so far (at most k, best first)."""

    bands: NormBands
    q: npt.NDArray[np.float32]
    augmented: list[float]  # the query side of the transform, for the tree bands
    q_norm: float
    search_k: int
    k: int
    max_per: MaxPer
    excluded: Rows
    admitted: list[Candidate] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.skip = set(np.asarray(self.excluded, dtype=np.int64).tolist())

    def take(self, source: _Source) -> None:
        """Ask `source` for its best `wanted` candidates (updating its bound), and walk the
        admitted items and the new ones again."""
        positions, scores = self._candidates(source)
        if source.seen:
            fresh = np.fromiter((p not in source.seen for p in positions.tolist()), np.bool_)
            positions = positions[fresh]
            scores = None if scores is None else scores[fresh]
        source.seen.update(positions.tolist())
        if scores is None:  # a tree band's: Annoy's distances are float32, rescored exactly
            scores = self.bands.rows_at(positions) @ self.q
        if len(self.admitted) >= self.k:
            # Below the k-th admitted score an item never enters the answer (the k-th only
            # rises as items are found): most of a chunk stops here, in one comparison.
            better = scores >= -self.admitted[-1][0]
            positions, scores = positions[better], scores[better]
        if not len(positions):
            return
        rows = self.bands.order[positions]
        pool = list(
            zip(
                (-scores).tolist(),
                positions.tolist(),
                rows.tolist(),
                self.max_per.codes[rows].tolist(),
                strict=True,
            )
        )
        if self.skip:
            pool = [c for c in pool if c[2] not in self.skip]
        pool += self.admitted
        pool.sort()
        taken: list[Candidate] = []
        counts: dict[int, int] = {}
        n = self.max_per.n
        for c in pool:
            value = c[3]
            if value >= 0:  # items without a value are not limited
                seen = counts.get(value, 0)
                if seen >= n:
                    continue
                counts[value] = seen + 1
            taken.append(c)
            if len(taken) == self.k:
                break
        self.admitted = taken

    def _candidates(
        self, source: _Source
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32] | None]:
        """(norm-ordered positions, exact scores, None for a tree band's) of the source's best
        `wanted`."""
        band, wanted = source.band, min(source.wanted, source.size)
        if source.exact:
            if source.scores is None:
                source.scores = self.bands.rows(band.start, band.stop) @ self.q
            scores = source.scores
            cut = len(scores) - wanted  # the best `wanted` sit past it once partitioned
            if cut > 0:
                part = np.argpartition(scores, cut - 1)
                best = part[cut:]
                source.bound = float(scores[part[cut - 1]])
            else:
                best = np.arange(len(scores))
                source.bound = -math.inf
            return best + band.start, scores[best]
        budget = band_search_k(band, self.search_k, wanted, self.k * BAND_OVERFETCH)
        ids, distances = band.index.get_nns_by_vector(
            self.augmented, wanted, budget, include_distances=True
        )
        if ids and wanted < source.size:
            # Angular distance on the augmented vectors (banded.py): q.x = (1 - d^2/2) ||q|| M;
            # the rest of the band scores below the last returned, as far as the index knows.
            source.bound = (1.0 - distances[-1] ** 2 / 2.0) * self.q_norm * band.max_norm
        else:
            source.bound = -math.inf
        return np.asarray(ids, dtype=np.int64) + band.start, None
