"""The query path over one version's Annoy indexes: fetch candidates, rerank them exactly.

Shared by the worker (which answers with it) and the builder (whose quality report measures it), so
the recall and queries/s in a manifest are those of the code that serves requests.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from annoy import AnnoyIndex

from query_engine.vectors import cosine_scores, top_k

# Candidates fetched per result wanted. The exact rerank then orders them; more candidates can
# only add true neighbours that the ANN order placed too low.
OVERFETCH = 10
# search_k in a manifest is tuned for this k; a request for more results scales it.
TUNED_K = 10

Ranked = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]


def scaled_search_k(search_k: int, k: int) -> int:
    """A search_k tuned for TUNED_K results, scaled for k (-1 keeps Annoy's default)."""
    return search_k if search_k < 0 else max(search_k, search_k * k // TUNED_K)


def similar_items(
    index: AnnoyIndex,
    item_factors: npt.NDArray[np.float32],
    item_norms: npt.NDArray[np.float32],
    row: int,
    k: int,
    search_k: int = -1,
    pool: int | None = None,
) -> Ranked:
    """Cosine neighbours of item `row`, itself excluded, exact scores, best first, from the
    index's best `pool` items (default: OVERFETCH per result)."""
    n = min(len(item_norms), (k + 1) * OVERFETCH if pool is None else pool)
    candidates = np.asarray(index.get_nns_by_item(row, n, search_k), dtype=np.int64)
    candidates = candidates[candidates != row]
    scores = cosine_scores(
        np.asarray(item_factors[candidates]), item_norms[candidates], np.asarray(item_factors[row])
    )
    best = top_k(scores, k)
    return candidates[best], scores[best]
