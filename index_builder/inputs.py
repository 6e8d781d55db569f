"""Load and validate factor matrices. No pickle: ids are stored as fixed-width unicode arrays."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from query_engine.confidence import FoldInWeights
from schemas.errors import InvalidInput

REQUIRED_ARRAYS = ("item_factors", "user_factors", "item_ids", "user_ids")


@dataclass(frozen=True)
class Factors:
    """Matrix factorization output: row i of item_factors is the item item_ids[i]."""

    item_factors: npt.NDArray[np.float32]
    user_factors: npt.NDArray[np.float32]
    item_ids: npt.NDArray[np.str_]
    user_ids: npt.NDArray[np.str_]
    # Interactions per item (or any popularity measure); None: rank by item norm instead.
    item_popularity: npt.NDArray[np.float64] | None = None
    # Trained factors: how a user's items are weighted for the fold-in, as the training did.
    fold_in: FoldInWeights | None = None

    @property
    def dim(self) -> int:
        return int(self.item_factors.shape[1])

    def checksum(self) -> str:
        """sha256 of the arrays' bytes, so a manifest names exactly what it was built from."""
        h = hashlib.sha256()
        for arr in (self.item_factors, self.user_factors, self.item_ids, self.user_ids):
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()


def make_factors(
    item_factors: npt.ArrayLike,
    user_factors: npt.ArrayLike,
    item_ids: npt.ArrayLike | None = None,
    user_ids: npt.ArrayLike | None = None,
    item_popularity: npt.ArrayLike | None = None,
) -> Factors:
    """Validate and normalize: float32 matrices of equal K, finite rows, unique string ids."""
    items = _matrix("item_factors", item_factors)
    users = _matrix("user_factors", user_factors, allow_empty=True)
    if users.shape[0] and users.shape[1] != items.shape[1]:
        raise InvalidInput(
            f"user_factors has K={users.shape[1]} but item_factors has K={items.shape[1]}"
        )
    iids = _ids("item_ids", item_ids, items.shape[0])
    uids = _ids("user_ids", user_ids, users.shape[0])
    popularity = None
    if item_popularity is not None:
        popularity = np.asarray(item_popularity, dtype=np.float64)
        if popularity.shape != (items.shape[0],) or not np.isfinite(popularity).all():
            raise InvalidInput(
                f"item_popularity must hold one finite number per item ({items.shape[0]})"
            )
    return Factors(items, users.reshape(users.shape[0], items.shape[1]), iids, uids, popularity)


def load_factors(path: Path) -> Factors:
    """Read a .npz holding item_factors, user_factors, item_ids, user_ids (ids optional) and,
    optionally, item_popularity (e.g. interaction counts) for the popularity fallback."""
    if not path.is_file():
        raise InvalidInput(f"factor file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except ValueError as exc:  # object arrays need pickle, which we never allow
        raise InvalidInput(f"{path}: cannot read without pickle ({exc})") from exc
    if "item_factors" not in arrays:
        raise InvalidInput(f"{path} has no 'item_factors' array (found: {sorted(arrays)})")
    return make_factors(
        arrays["item_factors"],
        arrays.get("user_factors", np.empty((0, arrays["item_factors"].shape[-1]))),
        arrays.get("item_ids"),
        arrays.get("user_ids"),
        arrays.get("item_popularity"),
    )


def load_factor_arrays(
    item_factors: Path,
    user_factors: Path | None = None,
    item_ids: Path | None = None,
    user_ids: Path | None = None,
) -> Factors:
    """Read separate .npy files (what many MF tools write); only item_factors is required."""

    def read(path: Path | None) -> np.ndarray | None:
        if path is None:
            return None
        if not path.is_file():
            raise InvalidInput(f"{path} does not exist")
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise InvalidInput(f"{path}: cannot read without pickle ({exc})") from exc

    items = read(item_factors)
    assert items is not None
    users = read(user_factors)
    return make_factors(
        items,
        users if users is not None else np.empty((0, items.shape[-1])),
        read(item_ids),
        read(user_ids),
    )


def save_factors(path: Path, factors: Factors) -> None:
    # Any: numpy's stub would match a dict of arrays against savez's `allow_pickle: bool` too
    extra: dict[str, Any] = (
        {} if factors.item_popularity is None else {"item_popularity": factors.item_popularity}
    )
    np.savez(
        path,
        item_factors=factors.item_factors,
        user_factors=factors.user_factors,
        item_ids=factors.item_ids,
        user_ids=factors.user_ids,
        **extra,
    )


def _matrix(name: str, value: npt.ArrayLike, allow_empty: bool = False) -> npt.NDArray[np.float32]:
    arr = np.asarray(value)
    if arr.ndim != 2:
        raise InvalidInput(f"{name} must be a 2-d matrix, got shape {arr.shape}")
    if arr.shape[0] == 0 and not allow_empty:
        raise InvalidInput(f"{name} has no rows")
    if not np.issubdtype(arr.dtype, np.number):
        raise InvalidInput(f"{name} must be numeric, got dtype {arr.dtype}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
    if len(bad):
        raise InvalidInput(f"{name} row {bad[0]} has a NaN or infinite value ({len(bad)} rows)")
    return out


def _ids(name: str, value: npt.ArrayLike | None, n: int) -> npt.NDArray[np.str_]:
    if value is None:
        return np.arange(n).astype(str)
    ids = np.asarray(value)
    if ids.ndim != 1 or ids.shape[0] != n:
        raise InvalidInput(f"{name} must hold {n} ids, one per factor row; got shape {ids.shape}")
    ids = ids.astype(str)
    ids = ids.astype(f"U{max(1, int(np.char.str_len(ids).max(initial=1)))}")  # no padding bytes
    empty = np.flatnonzero(np.char.str_len(ids) == 0)
    if len(empty):
        raise InvalidInput(f"{name} row {empty[0]} is an empty id")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = str(uniq[counts > 1][0])
        rows = np.flatnonzero(ids == dup)[:3].tolist()
        raise InvalidInput(f"{name} has duplicate id {dup!r} at rows {rows}")
    return ids
