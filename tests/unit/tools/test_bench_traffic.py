"""The shop-like request stream of `bench e2e --mix --zipf`."""

from collections import Counter

import numpy as np
import pytest

from schemas.events import RecommendRequest, SimilarItemsRequest
from tools.bench.traffic import Mix, mixed_requests, zipf_ranks


def test_a_mix_is_parsed_into_shares():
    mix = Mix.parse("similar=50,recommend=40,filtered=10")
    assert (mix.similar, mix.recommend, mix.filtered) == pytest.approx((0.5, 0.4, 0.1))
    assert Mix.parse("similar=1").recommend == 0 and not Mix.parse("similar=1").needs_attributes
    for bad, reason in [
        ("similar=50,views=5", "unknown kind 'views'"),
        ("similar=x", "not a number"),
        ("similar=-1,recommend=2", "must be >= 0"),
        ("similar=0", "add up to 0"),
    ]:
        with pytest.raises(ValueError, match=reason):
            Mix.parse(bad)


def test_zipf_ranks_are_skewed_and_bounded():
    rng = np.random.default_rng(0)
    ranks = zipf_ranks(rng, 1000, 1.0, 100_000)
    assert ranks.min() >= 0 and ranks.max() < 1000
    counts = np.bincount(ranks, minlength=1000)
    # P(rank 0) / P(rank 9) = 10 under exponent 1.
    assert 8 < counts[0] / counts[9] < 12
    uniform = np.bincount(zipf_ranks(rng, 1000, 0.0, 100_000), minlength=1000)
    assert uniform.max() < 3 * uniform.mean()


def test_the_stream_follows_the_mix_and_is_the_same_for_a_seed():
    make = mixed_requests(Mix.parse("similar=50,recommend=40,filtered=10"), 1.0, 5000, 800)
    requests = [make(f"r{i}", i) for i in range(20_000)]
    kinds = Counter(
        ("filtered-" if r.filter is not None else "") + type(r).__name__ for r in requests
    )
    assert kinds["SimilarItemsRequest"] == pytest.approx(10_000, rel=0.05)
    assert kinds["RecommendRequest"] == pytest.approx(8_000, rel=0.05)
    assert kinds["filtered-SimilarItemsRequest"] + kinds[
        "filtered-RecommendRequest"
    ] == pytest.approx(2_000, rel=0.1)
    items = Counter(r.item_id for r in requests if isinstance(r, SimilarItemsRequest))
    # Zipf: the most viewed item takes a share no uniform draw over 5,000 items comes near.
    assert items.most_common(1)[0][1] > 50 * 10_000 / 5000
    assert all(0 <= int(u.user_id[1:]) < 800 for u in requests if isinstance(u, RecommendRequest))
    again = mixed_requests(Mix.parse("similar=50,recommend=40,filtered=10"), 1.0, 5000, 800)
    assert [again(f"r{i}", i) for i in range(200)] == requests[:200]
