"""Train item and user factors from an interaction log with implicit's ALS.

The heavy dependencies (pyarrow, scipy, implicit) are an optional extra: a worker or a builder fed
ready-made factors never needs them, so they are imported only when this path is taken.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import structlog
from pydantic import ValidationError

from index_builder.inputs import Factors, make_factors
from query_engine.confidence import FoldInWeights
from schemas.errors import AnnrecError, InvalidInput, describe
from schemas.manifest import TrainParams, Weighting

if TYPE_CHECKING:
    import pyarrow as pa
    import scipy.sparse

log = structlog.get_logger(__name__)

TRAIN_EXTRA_HINT = "training needs the optional extra: pip install 'annrec[train]'"
COLUMNS = ("user", "item", "weight", "timestamp")
# implicit.nearest_neighbours.bm25_weight's defaults, passed explicitly so that the fold-in
# parameters a manifest records are by construction the ones the fit used.
BM25_K1, BM25_B = 100.0, 0.8
SUFFIXES = (".csv", ".parquet")


@dataclass(frozen=True)
class Events:
    """The log row by row, in file order (rows of weight 0 left out): what a holdout splits."""

    users: npt.NDArray[np.int64]  # rows of Interactions.user_ids
    items: npt.NDArray[np.int64]  # columns of Interactions.item_ids
    weights: npt.NDArray[np.float64]
    timestamps: npt.NDArray[np.float64] | None  # only their order matters


@dataclass(frozen=True)
class Interactions:
    """A user x item matrix of summed weights; row u is user_ids[u], column i is item_ids[i]."""

    user_ids: npt.NDArray[np.str_]
    item_ids: npt.NDArray[np.str_]
    user_items: scipy.sparse.csr_matrix
    events: Events | None = None

    @property
    def n_interactions(self) -> int:
        """Distinct (user, item) pairs with a positive weight: what ALS actually sees."""
        return int(self.user_items.nnz)


def load_interactions(path: Path) -> Interactions:
    """Read `user,item[,weight][,timestamp]` rows from a .csv (with a header) or .parquet file.

    Ids may be strings or integers and are kept as strings, so `42` in the log and `"42"` in a
    request are the same user. A missing weight column means every row weighs 1. Duplicate
    (user, item) rows are summed: a log of repeated plays or clicks is the common input, and their
    count is the confidence ALS wants. Rows of weight 0 keep their user and item in the id lists but
    add nothing to the matrix (implicit would read a stored 0 as "ignore this pair", not as "no
    interaction"). Extra columns are ignored. A timestamp orders the rows for the evaluation's
    holdout: a number (e.g. epoch seconds), an ISO 8601 text, or a Parquet timestamp or date.

    Refused with the (1-based) row named: an empty user or item, an empty, non-numeric, NaN,
    infinite or negative weight, an empty or unreadable timestamp, a CSV row with the wrong number
    of fields.
    """
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InvalidInput(f"{path}: interactions must be a .csv or .parquet file")
    if not path.is_file():
        raise InvalidInput(f"interaction file {path} does not exist")
    pa = _require("pyarrow")
    pq = _require("pyarrow.parquet")
    try:
        if suffix == ".csv":
            names, where = _csv_header(path), "the header"
        else:
            names, where = pq.read_schema(path).names, "the schema"
        missing = [c for c in ("user", "item") if c not in names]
        if missing:
            raise InvalidInput(
                f"{path}: {where} has no {missing[0]!r} column (found: {names}; "
                f"need user, item and optionally weight, timestamp)"
            )
        present = [c for c in COLUMNS if c in names]
        if suffix == ".csv":
            columns, row = _read_csv(path, present), _csv_row
        else:
            columns, row = _read_parquet(path, present), _parquet_row
    except pa.ArrowException as exc:
        raise InvalidInput(f"{path}: cannot read ({_one_line(exc)})") from exc
    return _interactions(
        columns["user"],
        columns["item"],
        columns.get("weight"),
        str(path),
        row,
        columns.get("timestamp"),
    )


def make_interactions(
    users: npt.ArrayLike,
    items: npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
    timestamps: npt.ArrayLike | None = None,
) -> Interactions:
    """Interactions from parallel arrays, validated and summed exactly as load_interactions does."""
    pa = _require("pyarrow")
    u = pa.array(np.asarray(users).astype(str))
    i = pa.array(np.asarray(items).astype(str))
    optional = [np.asarray(a) for a in (weights, timestamps) if a is not None]
    if len(u) != len(i) or any(len(a) != len(u) for a in optional):
        raise InvalidInput("users, items, weights and timestamps must have the same length")
    w = None if weights is None else pa.array(np.asarray(weights, dtype=np.float64))
    t = None if timestamps is None else pa.array(np.asarray(timestamps, dtype=np.float64))
    return _interactions(u, i, w, "interactions", _parquet_row, t)


def train_als(
    interactions: Interactions,
    *,
    factors: int = 64,
    regularization: float = 0.01,
    alpha: float = 1.0,
    iterations: int = 15,
    seed: int = 0,
    show_progress: bool = True,
    weighting: Weighting = "raw",
) -> tuple[Factors, TrainParams]:
    """Fit implicit's CPU ALS (confidence = alpha * weight, the weights first reweighted by
    `weighting`) and return its factors with the ids.

    BLAS is held to one thread during the fit: implicit parallelises over users itself, and a
    threaded OpenBLAS underneath oversubscribes the cores (implicit warns, and it is many times
    slower). implicit's own thread count is left at its default, all cores.
    """
    params = train_params(interactions, factors, regularization, alpha, iterations, seed, weighting)
    started = time.perf_counter()
    item_factors, user_factors = fit_als(interactions.user_items, params, show_progress)
    n_users, n_items = interactions.user_items.shape
    log.info(
        "als_trained",
        users=n_users,
        items=n_items,
        interactions=params.n_interactions,
        factors=factors,
        iterations=iterations,
        weighting=weighting,
        seconds=round(time.perf_counter() - started, 2),
    )
    # Interaction weight per item ranks the version's popularity list (the fallback for
    # cold-start users and for filling results up to k).
    popularity = np.asarray(interactions.user_items.sum(axis=0)).ravel()
    trained = make_factors(
        item_factors, user_factors, interactions.item_ids, interactions.user_ids, popularity
    )
    fold_in = fold_in_weights(interactions.user_items, weighting, alpha)
    return replace(trained, fold_in=fold_in), params


def train_params(
    interactions: Interactions,
    factors: int,
    regularization: float,
    alpha: float,
    iterations: int,
    seed: int,
    weighting: Weighting = "raw",
) -> TrainParams:
    """The parameters as the manifest records them; InvalidInput names a bad one."""
    try:
        implicit = import_module("implicit")
    except ImportError as exc:
        raise AnnrecError(TRAIN_EXTRA_HINT) from exc
    try:
        params = TrainParams(
            factors=factors,
            regularization=regularization,
            alpha=alpha,
            iterations=iterations,
            seed=seed,
            n_interactions=interactions.n_interactions,
            implicit_version=str(implicit.__version__),
            weighting=weighting,
        )
    except ValidationError as exc:
        raise InvalidInput(f"ALS parameter {describe(exc)}") from exc
    if interactions.n_interactions == 0:
        raise InvalidInput("no interactions with a positive weight to train on")
    return params


def weigh(user_items: scipy.sparse.csr_matrix, weighting: Weighting) -> scipy.sparse.csr_matrix:
    """The matrix ALS sees: raw weights, or BM25 / TF-IDF weights computed as implicit's own
    examples do (over the item x user matrix: an item's users are its document)."""
    if weighting == "raw":
        return user_items
    nearest_neighbours = _require("implicit.nearest_neighbours")
    item_users = user_items.T.tocoo()
    if weighting == "bm25":
        weighted = nearest_neighbours.bm25_weight(item_users, K1=BM25_K1, B=BM25_B)
    else:
        weighted = nearest_neighbours.tfidf_weight(item_users)
    user_weighted: scipy.sparse.csr_matrix = weighted.T.tocsr().astype(np.float32)
    user_weighted.sort_indices()
    return user_weighted


def fold_in_weights(
    user_items: scipy.sparse.csr_matrix, weighting: Weighting, alpha: float
) -> FoldInWeights:
    """What folding a user in needs to weigh their items as `weigh` weighed the training
    matrix: implicit's idf is over the item x user matrix, so per user (N: the items), and
    bm25's length normalization per item (its summed weight over the mean, computed as
    bm25_weight computes it)."""
    if weighting == "raw":
        return FoldInWeights("raw", alpha)
    item_users = user_items.T.tocoo()
    n_items = int(item_users.shape[0])
    if weighting == "tfidf":
        return FoldInWeights("tfidf", alpha, idf_items=n_items)
    # bm25_weight's own expressions on the same float32 matrix: the same bits.
    lengths = np.ravel(item_users.sum(axis=1))
    return FoldInWeights("bm25", alpha, n_items, BM25_K1, BM25_B, lengths, float(lengths.mean()))


def fit_als(
    user_items: scipy.sparse.csr_matrix, params: TrainParams, show_progress: bool
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(item factors, user factors) of implicit's CPU ALS, checked for shape."""
    try:
        cpu_als = import_module("implicit.cpu.als")
        recommender_base = import_module("implicit.recommender_base")
    except ImportError as exc:
        raise AnnrecError(TRAIN_EXTRA_HINT) from exc
    threadpoolctl = _require("threadpoolctl")
    # The constructor is inside the limit too: that is where implicit checks (and warns about) BLAS.
    with threadpoolctl.threadpool_limits(1, "blas"):
        # The cpu class directly: the generic factory would pick the GPU whenever CUDA is found.
        model = cpu_als.AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=params.alpha,
            dtype=np.float32,
            iterations=params.iterations,
            random_state=params.seed,
        )
        try:
            model.fit(weigh(user_items, params.weighting), show_progress=show_progress)
        except recommender_base.ModelFitError as exc:
            raise AnnrecError(
                f"ALS diverged ({exc}); try a larger regularization or a smaller alpha"
            ) from exc
    n_users, n_items = user_items.shape
    item_factors = np.asarray(model.item_factors, dtype=np.float32)
    user_factors = np.asarray(model.user_factors, dtype=np.float32)
    expected_items, expected_users = (n_items, params.factors), (n_users, params.factors)
    if item_factors.shape != expected_items or user_factors.shape != expected_users:
        raise AnnrecError(
            f"implicit {params.implicit_version} returned factors of shape "
            f"{item_factors.shape} (items) and {user_factors.shape} (users); expected "
            f"{expected_items} and {expected_users}"
        )
    return item_factors, user_factors


def _require(module: str) -> ModuleType:
    try:
        return import_module(module)
    except ImportError as exc:
        raise AnnrecError(TRAIN_EXTRA_HINT) from exc


def _csv_row(i: int) -> str:
    return f"row {i + 1} (data rows counted from 1, header not counted)"


def _parquet_row(i: int) -> str:
    return f"row {i + 1} (counted from 1)"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _read_csv(path: Path, present: list[str]) -> dict[str, pa.Array]:
    arrow = _require("pyarrow")
    pa_csv = _require("pyarrow.csv")
    bad_rows: list[Any] = []

    def on_invalid_row(row: Any) -> str:
        bad_rows.append(row)
        return "error"

    def read(use_threads: bool) -> pa.Table:
        return pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(use_threads=use_threads),
            parse_options=pa_csv.ParseOptions(invalid_row_handler=on_invalid_row),
            # Everything as text: ids stay exactly as written ("007" is not 7), and a bad weight
            # is reported by us with its row instead of by the CSV reader without one.
            convert_options=pa_csv.ConvertOptions(
                include_columns=present,
                column_types={c: arrow.string() for c in present},
                strings_can_be_null=False,
            ),
        )

    try:
        table = read(use_threads=True)
    except arrow.ArrowInvalid:
        if not bad_rows:
            raise
        # The threaded reader does not know row numbers; read again serially to name the row.
        bad_rows.clear()
        try:
            read(use_threads=False)
        except arrow.ArrowInvalid:
            if not bad_rows or bad_rows[0].number is None:
                raise
        bad = bad_rows[0]
        # `number` counts non-empty CSV rows including the header, so it is the data row + 1.
        raise InvalidInput(
            f"{path}: {_csv_row(bad.number - 2)} has {bad.actual_columns} fields, the header has "
            f"{bad.expected_columns}: {bad.text[:80]!r}"
        ) from None
    columns = {name: table.column(name).combine_chunks() for name in table.column_names}
    if "weight" in columns:
        columns["weight"] = _parse_weights(columns["weight"], lambda i: f"{path}: {_csv_row(i)}")
    if "timestamp" in columns:
        columns["timestamp"] = _parse_timestamps(
            columns["timestamp"], lambda i: f"{path}: {_csv_row(i)}"
        )
    return columns


def _csv_header(path: Path) -> list[str]:
    """The header's field names, read the way arrow will (a UTF-8 BOM is not part of a name)."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        return next(csv.reader(f), [])


def _read_parquet(path: Path, present: list[str]) -> dict[str, pa.Array]:
    arrow = _require("pyarrow")
    pq = _require("pyarrow.parquet")
    table = pq.read_table(path, columns=present)
    columns: dict[str, pa.Array] = {}
    for name in present:
        col = table.column(name).combine_chunks()
        if arrow.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        is_text = arrow.types.is_string(col.type) or arrow.types.is_large_string(col.type)
        if name == "timestamp":
            col = _parse_timestamps(col, lambda i: f"{path}: {_parquet_row(i)}")
        elif name == "weight" and is_text:
            col = _parse_weights(col, lambda i: f"{path}: {_parquet_row(i)}")
        elif name != "weight" and not arrow.types.is_string(col.type):
            col = col.cast(arrow.string())  # integer ids, large_string
        columns[name] = col
    return columns


def _parse_weights(text: pa.Array, where: Callable[[int], str]) -> pa.Array:
    """Strings -> float64, naming the first row that is not a number."""
    arrow = _require("pyarrow")
    pc = _require("pyarrow.compute")
    text = pc.utf8_trim_whitespace(text.fill_null(""))
    empty = np.flatnonzero(pc.equal(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False))
    if len(empty):
        raise InvalidInput(f"{where(int(empty[0]))}: empty weight")
    try:
        return pc.cast(text, arrow.float64())
    except arrow.ArrowInvalid:
        pass
    # Bisect for the first value arrow cannot parse: O(n) work even when it is near the end.
    lo, hi = 0, len(text)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pc.cast(text.slice(lo, mid - lo), arrow.float64())
            lo = mid
        except arrow.ArrowInvalid:
            hi = mid
    raise InvalidInput(f"{where(lo)}: weight {text[lo].as_py()!r} is not a number")


def _parse_timestamps(column: pa.Array, where: Callable[[int], str]) -> pa.Array:
    """Numbers, ISO 8601 texts, Parquet timestamps or dates -> float64, ordered as the times are
    (timestamps and dates as epoch microseconds; numbers as they are)."""
    arrow = _require("pyarrow")
    pc = _require("pyarrow.compute")
    types = arrow.types
    if column.null_count:
        first = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise InvalidInput(f"{where(first)}: empty timestamp")
    if types.is_integer(column.type) or types.is_floating(column.type):
        return pc.cast(column, arrow.float64())
    if types.is_timestamp(column.type) or types.is_date(column.type):
        return pc.cast(pc.cast(column, arrow.timestamp("us")), arrow.int64()).cast(arrow.float64())
    if not (types.is_string(column.type) or types.is_large_string(column.type)):
        raise InvalidInput(f"{where(0)}: timestamp of type {column.type} is not a time")
    text = pc.utf8_trim_whitespace(column)
    empty = np.flatnonzero(pc.equal(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False))
    if len(empty):
        raise InvalidInput(f"{where(int(empty[0]))}: empty timestamp")
    parsers: list[Callable[[pa.Array], pa.Array]] = [
        lambda t: pc.cast(t, arrow.float64()),
        # ISO 8601 with a zone offset, or without one (read as UTC); one or the other throughout.
        lambda t: pc.cast(pc.cast(t, arrow.timestamp("us", tz="UTC")), arrow.int64()),
        lambda t: pc.cast(pc.cast(t, arrow.timestamp("us")), arrow.int64()),
    ]
    parse = parsers[-1]
    for candidate in parsers:  # the first row decides which kind of time the column holds
        try:
            candidate(text.slice(0, 1))
        except arrow.ArrowInvalid:
            continue
        parse = candidate
        break
    try:
        return pc.cast(parse(text), arrow.float64())
    except arrow.ArrowInvalid:
        bad = _first_unparsable(text, parse)
    raise InvalidInput(
        f"{where(bad)}: timestamp {text[bad].as_py()!r} is not a number or an ISO 8601 time "
        "like the first row's"
    )


def _first_unparsable(text: pa.Array, parse: Callable[[pa.Array], Any]) -> int:
    """The first position `parse` refuses (bisection: O(n) work even near the end)."""
    arrow = _require("pyarrow")
    lo, hi = 0, len(text)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            parse(text.slice(lo, mid - lo))
            lo = mid
        except arrow.ArrowInvalid:
            hi = mid
    return lo


def _interactions(
    users: pa.Array,
    items: pa.Array,
    weights: pa.Array | None,
    source: str,
    row: Callable[[int], str],
    timestamps: pa.Array | None = None,
) -> Interactions:
    sparse = _require("scipy.sparse")

    def where(i: int) -> str:
        return f"{source}: {row(i)}"

    n = len(users)
    if n == 0:
        raise InvalidInput(f"{source}: no interactions (no data rows)")
    user_codes, user_ids = _encode(users, "user", where)
    item_codes, item_ids = _encode(items, "item", where)
    if weights is None:
        w = np.ones(n, dtype=np.float64)
    else:
        if weights.null_count:
            first = int(np.flatnonzero(weights.is_null().to_numpy(zero_copy_only=False))[0])
            raise InvalidInput(f"{where(first)}: empty weight")
        w = np.asarray(weights.to_numpy(zero_copy_only=False), dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
        if len(bad):
            value = float(w[bad[0]])
            reason = "negative" if np.isfinite(value) else "not finite"
            raise InvalidInput(f"{where(int(bad[0]))}: weight {value!r} is {reason}")
    # Summed in float64 (repeated small weights lose nothing), stored as float32 for implicit.
    matrix = sparse.coo_matrix(
        (w, (user_codes, item_codes)), shape=(len(user_ids), len(item_ids))
    ).tocsr()
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    if not np.isfinite(matrix.data.astype(np.float32)).all():
        raise InvalidInput(f"{source}: summed weights overflow float32; scale the weights down")
    matrix = matrix.astype(np.float32)
    matrix.sort_indices()
    ts = None
    if timestamps is not None:
        ts = np.asarray(timestamps.to_numpy(zero_copy_only=False), dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(ts))
        if len(bad):
            raise InvalidInput(f"{where(int(bad[0]))}: timestamp {ts[bad[0]]!r} is not finite")
    positive = w > 0
    events = Events(
        user_codes[positive],
        item_codes[positive],
        w[positive],
        None if ts is None else ts[positive],
    )
    return Interactions(user_ids, item_ids, matrix, events)


def _encode(
    ids: pa.Array, name: str, where: Callable[[int], str]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.str_]]:
    """(row -> index into the sorted unique ids, the sorted unique ids)."""
    pc = _require("pyarrow.compute")
    ids = ids.fill_null("")
    empty = np.flatnonzero(pc.equal(pc.utf8_length(ids), 0).to_numpy(zero_copy_only=False))
    if len(empty):
        raise InvalidInput(f"{where(int(empty[0]))}: empty {name}")
    # Dictionary-encoding in arrow is much faster than np.unique over millions of Python strings.
    # Large inputs arrive chunked (pa.array of a big numpy string array returns a ChunkedArray),
    # and a chunked encoding has one dictionary per chunk: encode one contiguous array.
    if hasattr(ids, "combine_chunks"):
        ids = ids.combine_chunks()
    encoded = pc.dictionary_encode(ids)
    uniq = np.asarray(encoded.dictionary.to_pylist(), dtype=str)
    order = np.argsort(uniq, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    codes = rank[encoded.indices.to_numpy(zero_copy_only=False)].astype(np.int64)
    return codes, uniq[order]
