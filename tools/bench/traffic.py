"""Request streams that look like a shop's: a mix of request kinds, subjects by Zipf popularity.

A product page asks "similar items" on every view, a home page asks "recommended for you", some
surfaces filter (in stock, one category). And views are not uniform: a few items and users take
most of the traffic (Zipf), which is what makes caches and hot pages behave as in production.

`mixed_requests` turns a `--mix` and a `--zipf` exponent into the MakeRequest the load generator
calls for the i-th request; deterministic for a seed, so two runs send the same stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schemas.events import RecommendRequest, SimilarItemsRequest
from schemas.filters import AttrEquals

AnyRequest = RecommendRequest | SimilarItemsRequest
MakeRequest = Callable[[str, int], AnyRequest]  # (request_id, i) -> the i-th request sent

KINDS = ("similar", "recommend", "filtered")
# The filtered share asks half of each kind for items in stock (synth_attributes: 90% pass).
FILTER = AttrEquals(attr="in_stock", eq=True)
DEFAULT_MIX = "similar=50,recommend=40,filtered=10"
_PLAN_SIZE = 1 << 16  # requests drawn ahead; the stream repeats after this many


@dataclass(frozen=True)
class Mix:
    """Shares of each request kind, summing to 1."""

    similar: float
    recommend: float
    filtered: float

    @classmethod
    def parse(cls, text: str) -> Mix:
        """'similar=50,recommend=40,filtered=10' (any positive weights; normalised)."""
        weights = dict.fromkeys(KINDS, 0.0)
        for part in text.split(","):
            name, _, value = part.partition("=")
            name = name.strip()
            if name not in weights:
                raise ValueError(f"--mix: unknown kind {name!r} (kinds: {', '.join(KINDS)})")
            try:
                weights[name] = float(value)
            except ValueError:
                raise ValueError(f"--mix: {name}={value!r} is not a number") from None
            if weights[name] < 0:
                raise ValueError(f"--mix: {name} must be >= 0")
        total = sum(weights.values())
        if total <= 0:
            raise ValueError("--mix: the shares add up to 0")
        return cls(*(weights[k] / total for k in KINDS))

    @property
    def needs_attributes(self) -> bool:
        return self.filtered > 0

    def label(self) -> str:
        return ",".join(f"{k}={round(100 * getattr(self, k))}" for k in KINDS)


def zipf_ranks(
    rng: np.random.Generator, n: int, exponent: float, size: int
) -> npt.NDArray[np.int64]:
    """`size` draws of 0..n-1, rank r with probability proportional to 1 / (r + 1)^exponent
    (exponent 0: uniform). Bounded, unlike numpy's zipf, so every draw is a real subject."""
    if exponent <= 0:
        return rng.integers(0, n, size=size, dtype=np.int64)
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    cdf = np.cumsum(weights)
    return np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right").astype(np.int64)


def mixed_requests(
    mix: Mix, zipf: float, n_items: int, n_users: int, k: int = 10, seed: int = 0
) -> MakeRequest:
    """The i-th request of a seeded stream: kind by `mix`, subject by Zipf popularity over a
    shuffled catalogue (the popular items are not simply the first rows). Item ids are the synth
    catalogue's `i<row>`, user ids `u<row>`."""
    rng = np.random.default_rng(seed)
    kinds = rng.choice(len(KINDS), size=_PLAN_SIZE, p=[mix.similar, mix.recommend, mix.filtered])
    item_of_rank = rng.permutation(n_items)
    user_of_rank = rng.permutation(n_users)
    items = item_of_rank[zipf_ranks(rng, n_items, zipf, _PLAN_SIZE)]
    users = user_of_rank[zipf_ranks(rng, n_users, zipf, _PLAN_SIZE)]
    filtered_similar = rng.random(_PLAN_SIZE) < 0.5

    def make(rid: str, i: int) -> AnyRequest:
        j = i % _PLAN_SIZE
        kind = KINDS[kinds[j]]
        if kind == "similar" or (kind == "filtered" and filtered_similar[j]):
            return SimilarItemsRequest(
                request_id=rid,
                item_id=f"i{items[j]}",
                k=k,
                filter=FILTER if kind == "filtered" else None,
            )
        return RecommendRequest(
            request_id=rid,
            user_id=f"u{users[j]}",
            k=k,
            filter=FILTER if kind == "filtered" else None,
        )

    return make
