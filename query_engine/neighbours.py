"""Similar items from a version's neighbour table: every item's M nearest items by cosine,
computed at build time (index_builder/neighbours.py) and stored with exact scores.

"Which items are most similar to item i" has only as many answers as there are items, and they
change only with the version: serving one is a row lookup, not a search. What the table cannot
answer alone:

- more results than it holds after exclusions and filters: `lookup` says so (None) and the
  plan continues with the angular index or a scan, so an answer is never worse than without it;
- k above M: `two_hop` widens to the neighbours of the neighbours (up to M + M^2 candidates,
  rescored exactly). In a kNN graph the true (M+j)-th neighbour is almost always a near neighbour
  of one of the first M; the quality report measures up to which k that holds at the target
  recall, and above it the index serves.

Pure numpy: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from query_engine.selection import Selection
from query_engine.vectors import cosine_scores, top_k

Rows = npt.NDArray[np.int64]
Ranked = tuple[Rows, npt.NDArray[np.float32]]


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

    def two_hop(
        self,
        item_factors: npt.NDArray[np.float32],
        item_norms: npt.NDArray[np.float32],
        row: int,
        fetch: int,
    ) -> Ranked | None:
        """The `fetch` best of item `row`'s neighbours and their neighbours, rescored exactly;
        None when the two hops hold fewer than `fetch` items."""
        first = np.asarray(self.rows[row], dtype=np.int64)
        candidates = np.unique(np.concatenate([first, np.asarray(self.rows[first]).ravel()]))
        candidates = candidates[candidates != row]
        if len(candidates) < fetch:
            return None
        query = np.asarray(item_factors[row])
        scores = cosine_scores(np.asarray(item_factors[candidates]), item_norms[candidates], query)
        best = top_k(scores, fetch)
        return candidates[best], scores[best]
