"""Similar items from a version's neighbour table: every item's M nearest items by cosine,
computed at build time (index_builder/neighbours.py) and stored with exact scores.

"Which items are most similar to item i" has only as many answers as there are items, and they
change only with the version: serving one is a row lookup, not a search. What the table cannot
answer alone:

- more results than it holds after exclusions and filters: `lookup` says so (None) and the
  plan continues with the angular index or a scan, so an answer is never worse than without it;
- k above M: `walk` searches the table best first (query_engine/graph_search.py): a beam of
  `beam` x k items, expanding the best found until nothing unexpanded can enter it, each item
  found rescored exactly. In a kNN graph the true (M+j)-th neighbour is almost always a near
  neighbour of one of the best found; the quality report measures up to which k (and with which
  beam) that holds at the target recall, and above it the index serves.

No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from query_engine.selection import Selection
from query_engine.vectors import cosine_scores, top_k

Rows = npt.NDArray[np.int64]
Ranked = tuple[Rows, npt.NDArray[np.float32]]
# The beam of a walk, in multiples of k: how many best items it keeps while it searches. On 1M
# synthetic items x 64 (M=32, graph recall@10 0.97), recall@50 0.85 / 0.89 / 0.92 with beams of
# 1 / 2 / 3 k, recall@100 0.80 / 0.87 / 0.90 (2 / 3 k): the graph, not the beam, bounds it there.
WALK_BEAM = 2


@dataclass(frozen=True)
class NeighbourTable:
    """rows[i]: item i's nearest items (itself excluded), best first; scores[i]: their exact
    cosine with item i. int32/float32, shape (n_items, width); mmapped in a worker."""

    rows: npt.NDArray[np.int32]
    scores: npt.NDArray[np.float32]

    @property
    def width(self) -> int:
        return int(self.rows.shape[1])

    def lookup(self, row: int, fetch: int, keep: Selection | None = None) -> Ranked | None:
        """The `fetch` items most similar to item `row` among `keep`, exact scores, best first;
        None when fewer than `fetch` of its table row pass (the caller goes on elsewhere).

        Exact whenever the table row is: an item outside the row scores at most the row's last
        score, so the best passing items of the row are the best passing items of all."""
        rows = np.asarray(self.rows[row], dtype=np.int64)
        scores = np.asarray(self.scores[row])
        if keep is not None:
            passing = keep.passes(rows)
            rows, scores = rows[passing], scores[passing]
        if len(rows) < fetch:
            return None
        return rows[:fetch], scores[:fetch]

    def walk(
        self,
        item_factors: npt.NDArray[np.float32],
        item_norms: npt.NDArray[np.float32],
        row: int,
        fetch: int,
        beam: int = WALK_BEAM,
    ) -> Ranked | None:
        """The `fetch` best items a best-first search of the table from item `row` finds,
        keeping `beam` x `fetch` items while it searches; scores exact (cosine_scores), best
        first. None when the search reaches fewer than `fetch` items."""
        from query_engine.graph_search import best_first  # numba: only where walks run

        found = best_first(
            np.asarray(item_factors),
            np.asarray(item_norms),
            np.asarray(self.rows),
            np.asarray(self.scores),
            row,
            max(fetch, beam * fetch),
        )
        if len(found) < fetch:
            return None
        scores = cosine_scores(
            np.asarray(item_factors[found]), item_norms[found], item_factors[row]
        )
        top = top_k(scores, fetch)
        return found[top], scores[top]
