"""Seeded synthetic factors that look like matrix-factorization output.

Real MF factors are clustered (tastes, genres) and their item norms are popularity-skewed: a few
long vectors, a long tail of short ones. Both properties matter for ANN quality (the MIPS transform
struggles exactly with skewed norms), so benchmarks and tests use data that has them.
"""

from __future__ import annotations

import numpy as np

from index_builder.inputs import Factors, make_factors


def synth_factors(
    n_items: int = 10_000,
    n_users: int = 1_000,
    dim: int = 32,
    n_clusters: int = 64,
    seed: int = 0,
) -> Factors:
    rng = np.random.default_rng(seed)
    centers = _unit(rng.standard_normal((n_clusters, dim)))
    # Zipf-like cluster sizes: some genres are much bigger than others.
    cluster_weights = 1.0 / np.arange(1, n_clusters + 1) ** 0.8
    cluster_weights /= cluster_weights.sum()

    def vectors(n: int, spread: float, norm_sigma: float) -> np.ndarray:
        assign = rng.choice(n_clusters, size=n, p=cluster_weights)
        noise = rng.standard_normal((n, dim)) * (spread / np.sqrt(dim))
        directions = _unit(centers[assign] + noise)
        norms = rng.lognormal(mean=0.0, sigma=norm_sigma, size=n)
        return (directions * norms[:, None]).astype(np.float32)

    items = vectors(n_items, spread=1.0, norm_sigma=0.7)  # long-tailed popularity
    users = vectors(n_users, spread=1.5, norm_sigma=0.3)
    return make_factors(
        items,
        users,
        np.char.add("i", np.arange(n_items).astype(str)),
        np.char.add("u", np.arange(n_users).astype(str)),
    )


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)
