"""Seeded synthetic factors that look like matrix-factorization output.

Real MF factors are clustered (tastes, genres) and their item norms are popularity-skewed: a few
long vectors, a long tail of short ones. Both properties matter for ANN quality (the MIPS transform
struggles exactly with skewed norms), so benchmarks and tests use data that has them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from index_builder.attributes import AttributeTable, Column
from index_builder.inputs import Factors, make_factors, save_factors
from query_engine.vectors import unit_rows
from schemas.errors import AnnrecError, InvalidInput


def synth_factors(
    n_items: int = 10_000,
    n_users: int = 1_000,
    dim: int = 32,
    n_clusters: int = 64,
    seed: int = 0,
) -> Factors:
    rng = np.random.default_rng(seed)
    clusters = _Clusters.draw(rng, n_clusters, dim)
    items = clusters.vectors(rng, n_items, **ITEM_SHAPE)
    users = clusters.vectors(rng, n_users, **USER_SHAPE)
    return make_factors(items, users, _names("i", n_items), _names("u", n_users))


# How spread around their cluster centre and how long-tailed in norm synthetic vectors are: items
# have long-tailed norms (popularity), users less so.
ITEM_SHAPE = {"spread": 1.0, "norm_sigma": 0.7}
USER_SHAPE = {"spread": 1.5, "norm_sigma": 0.3}
SYNTH_CHUNK_ROWS = 1_000_000


def write_synth_factors(
    path: Path,
    n_items: int,
    n_users: int,
    dim: int = 32,
    n_clusters: int = 64,
    seed: int = 0,
    chunk_rows: int = SYNTH_CHUNK_ROWS,
) -> None:
    """synth_factors' catalogue written as a factors .npz, generated `chunk_rows` rows at a time:
    the float64 temporaries of one call over 10M x 64 items take ~15 GB, the chunks ~2 GB beside
    the float32 result. Up to `chunk_rows` items and users the arrays equal synth_factors' (same
    draws in the same order); beyond, the same distribution from a different stream."""
    rng = np.random.default_rng(seed)
    clusters = _Clusters.draw(rng, n_clusters, dim)

    def chunked(n: int, shape: dict[str, float]) -> npt.NDArray[np.float32]:
        out = np.empty((n, dim), dtype=np.float32)
        for start in range(0, n, chunk_rows):
            stop = min(n, start + chunk_rows)
            out[start:stop] = clusters.vectors(rng, stop - start, **shape)
        return out

    items = chunked(n_items, ITEM_SHAPE)
    users = chunked(n_users, USER_SHAPE)
    # Already float32, finite and uniquely named: Factors directly, without make_factors' checks
    # (sorting 10M ids), which the build runs on the file anyway.
    save_factors(path, Factors(items, users, _names("i", n_items), _names("u", n_users)))


@dataclass(frozen=True)
class _Clusters:
    """Taste clusters: unit centres and Zipf-like sizes (some genres are much bigger)."""

    centers: npt.NDArray[np.floating[Any]]
    weights: npt.NDArray[np.float64]

    @classmethod
    def draw(cls, rng: np.random.Generator, n_clusters: int, dim: int) -> _Clusters:
        centers = unit_rows(rng.standard_normal((n_clusters, dim)))
        weights = 1.0 / np.arange(1, n_clusters + 1) ** 0.8
        return cls(centers, weights / weights.sum())

    def vectors(
        self, rng: np.random.Generator, n: int, spread: float, norm_sigma: float
    ) -> npt.NDArray[np.float32]:
        n_clusters, dim = self.centers.shape
        assign = rng.choice(n_clusters, size=n, p=self.weights)
        noise = rng.standard_normal((n, dim)) * (spread / np.sqrt(dim))
        directions = unit_rows(self.centers[assign] + noise)
        norms = rng.lognormal(mean=0.0, sigma=norm_sigma, size=n)
        return (directions * norms[:, None]).astype(np.float32)


def _names(prefix: str, n: int) -> npt.NDArray[np.str_]:
    return np.char.add(prefix, np.arange(n).astype(str))


def synth_interactions(
    n_users: int = 2_000,
    n_items: int = 5_000,
    dim: int = 16,
    interactions_per_user: int = 30,
    seed: int = 0,
    *,
    n_clusters: int = 32,
    temperature: float = 0.1,
) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.str_], npt.NDArray[np.float32]]:
    """(user ids, item ids, weights), one entry per interaction, from a latent taste model.

    Items sit around cluster centres and have a lognormal popularity. A user has a main and a
    secondary taste (a cluster each) and picks every interaction from one of them, the item with
    probability proportional to softmax(centre . item / temperature) * popularity: clustered like
    real behaviour, popularity-skewed, and learnable by MF. Sampling is per taste cluster (a
    clusters x items table), never users x items, so 10k users x 50 interactions take well under a
    second. Items are drawn with replacement: repeated (user, item) rows happen, as they do in a
    play log, and the loader sums them.
    """
    if min(n_users, n_items, dim, interactions_per_user, n_clusters) < 1 or temperature <= 0:
        raise ValueError("sizes must be >= 1 and temperature > 0")
    rng = np.random.default_rng(seed)
    centers = unit_rows(rng.standard_normal((n_clusters, dim)))
    cluster_weights = 1.0 / np.arange(1, n_clusters + 1) ** 0.8
    cluster_weights /= cluster_weights.sum()

    item_cluster = rng.choice(n_clusters, size=n_items, p=cluster_weights)
    item_vectors = unit_rows(
        centers[item_cluster] + rng.standard_normal((n_items, dim)) / np.sqrt(dim)
    )
    log_popularity = rng.normal(0.0, 1.0, size=n_items)
    logits = centers @ item_vectors.T / temperature + log_popularity  # clusters x items
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    cdf = np.cumsum(probs, axis=1)
    cdf /= cdf[:, -1:]
    # Row c of the table shifted by c: one searchsorted over the flattened table samples every
    # interaction from its own cluster's distribution at once.
    flat_cdf = (cdf + np.arange(n_clusters)[:, None]).ravel()

    main = rng.choice(n_clusters, size=n_users, p=cluster_weights)
    secondary = rng.choice(n_clusters, size=n_users, p=cluster_weights)
    user = np.repeat(np.arange(n_users), interactions_per_user)
    taste = np.where(rng.random(user.size) < 0.75, main[user], secondary[user])
    query = taste + rng.random(user.size)
    order = np.argsort(query)  # sorted queries walk the table once instead of hopping around it
    slot = np.empty_like(order)
    slot[order] = np.searchsorted(flat_cdf, query[order], side="right")
    item = np.minimum(slot - taste * n_items, n_items - 1)  # float rounding at a row's end
    weights = rng.geometric(0.6, size=user.size).astype(np.float32)  # 1, sometimes 2, 3...
    # Formatting each id once and indexing is ~5x faster than formatting every interaction.
    user_names = np.char.add("u", np.arange(n_users).astype(str))
    item_names = np.char.add("i", np.arange(n_items).astype(str))
    return user_names[user], item_names[item], weights


def write_interactions(
    path: Path,
    interactions: tuple[npt.NDArray[np.str_], npt.NDArray[np.str_], npt.NDArray[np.float32]],
) -> int:
    """Write (users, items, weights), e.g. synth_interactions(...), as `user,item,weight` (.csv
    with a header, or .parquet); returns the number of rows. Needs the train extra (pyarrow),
    imported here so `annrec synth` of factors does not."""
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise InvalidInput(f"{path}: interactions must be written as .csv or .parquet")
    try:
        import pyarrow as pa
        import pyarrow.csv as pa_csv
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise AnnrecError("writing interactions needs: pip install 'annrec[train]'") from exc
    users, items, weights = interactions
    table = pa.table({"user": users, "item": items, "weight": weights})
    if path.suffix.lower() == ".csv":
        # Synthetic ids never hold a comma or a quote, so the file is plain `u1,i7,1`.
        pa_csv.write_csv(table, path, pa_csv.WriteOptions(quoting_style="none"))
    else:
        pq.write_table(table, path)
    return table.num_rows


# Selectivities of the synthetic `bucket` attribute: `bucket == "p1"` passes exactly 1% of the
# items (rounded), so benchmarks hit each selectivity through the real filter path.
BUCKET_SELECTIVITIES = {"p50": 0.5, "p10": 0.1, "p1": 0.01, "p0.1": 0.001, "p0.01": 0.0001}


def synth_attributes(n_items: int, seed: int = 0) -> AttributeTable:
    """Seeded attributes for synthetic items: `category` (20 values, Zipf-sized), `brand` (200,
    uniform), `in_stock` (90% true) and `bucket` (exact selectivities, BUCKET_SELECTIVITIES)."""
    rng = np.random.default_rng(seed + 1)
    weights = 1.0 / np.arange(1, 21) ** 1.1
    category = rng.choice(20, size=n_items, p=weights / weights.sum()).astype(np.int32)
    brand = rng.integers(0, 200, size=n_items, dtype=np.int32)
    in_stock = (rng.random(n_items) < 0.9).astype(np.int32)
    bucket = np.full(n_items, len(BUCKET_SELECTIVITIES), dtype=np.int32)  # "rest"
    order, start = rng.permutation(n_items), 0
    for code, share in enumerate(BUCKET_SELECTIVITIES.values()):
        size = max(1, round(share * n_items))
        bucket[order[start : start + size]] = code
        start += size
    return AttributeTable(
        n_items,
        [
            Column("category", "category", category, [f"c{i:02d}" for i in range(20)]),
            Column("brand", "category", brand, [f"b{i:03d}" for i in range(200)]),
            Column("in_stock", "bool", in_stock),
            Column("bucket", "category", bucket, [*BUCKET_SELECTIVITIES, "rest"]),
        ],
    )
