"""The index manifest: what a published version contains and how to load it safely.

Annoy files do not record their metric or dimension, and loading with the wrong ones fails
silently (spotify/annoy #368, #394); the manifest carries both and a size + sha256 per file, and the
worker refuses a version whose files do not match.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MANIFEST_NAME = "manifest.json"
# 2: user -> items moved from one Bachrach-augmented Annoy file to norm bands (MipsSpec). A
# worker refuses other formats with a reason rather than guessing at their layout.
FORMAT_VERSION = 2

# Sortable (UTC time first) and unique (random suffix); a plain file-name component by
# construction, so a version name can never escape the storage root.
VERSION_PATTERN = r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{6}$"
_VERSION_RE = re.compile(VERSION_PATTERN)


def is_version_name(name: str) -> bool:
    return bool(_VERSION_RE.fullmatch(name))


# A model's name (schemas/layout.py): lower-case letters, digits, '-' and '_', starting with a
# letter or digit; a plain file-name component by construction (no '/', no '..'), so a model
# name cannot escape the storage root either.
MODEL_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
# The model a request names when it names none: the storage root's own versions, so the layout
# and requests of before there were several models keep their meaning.
DEFAULT_MODEL = "default"
_MODEL_RE = re.compile(MODEL_PATTERN)


def is_model_name(name: str) -> bool:
    return bool(_MODEL_RE.fullmatch(name))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Model):
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class AnnoySpec(_Model):
    file: str
    metric: Literal["angular", "euclidean"]
    dim: int = Field(ge=1)
    n_trees: int = Field(ge=1)


class MipsBand(_Model):
    """One norm band: the items at positions [start, stop) of the norm order, Bachrach-augmented
    with the band's own M (its largest norm), so their extra coordinate varies little and the
    augmented index stays sharp (Yan et al. 2018, norm-ranging)."""

    file: str
    start: int = Field(ge=0)
    stop: int = Field(ge=1)
    max_norm: float = Field(ge=0, description="M of this band: the norm of its first item")


class MipsSpec(_Model):
    """user -> items: items ordered by decreasing norm, cut into bands of geometric size, one
    augmented Annoy index per band. A query searches bands from the longest norms down and stops
    when max_norm(band) * ||q|| cannot beat the k-th score found (Cauchy-Schwarz), so only the
    few bands that can hold an answer are searched; the first bands may be scanned exactly."""

    method: Literal["norm_bands"] = "norm_bands"
    order_file: str = Field(description="int32 item rows, largest norm first")
    metric: Literal["angular"] = "angular"
    dim: int = Field(ge=2, description="K + 1: the augmented dimension")
    n_trees: int = Field(ge=1)
    bands: list[MipsBand] = Field(min_length=1)


ATTRIBUTE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"  # also a plain file-name component
MAX_CATEGORY_VALUES = 100_000


# A boolean attribute's file holds one of these int8 codes per item.
UNKNOWN, FALSE, TRUE = -1, 0, 1


class AttributeSpec(_Model):
    """One item attribute published with a version (filters in requests refer to it by name).

    `category`: values are strings; `rows_file` holds int32 item rows grouped by value (value i
    at rows[offsets[i]:offsets[i + 1]], ascending), `offsets_file` the int64 offsets: an id
    array per value, compact at any cardinality. `bool`: `rows_file` holds one int8 per item
    (1 true, 0 false, -1 unknown), so real-time updates (item-updates topic) are one write."""

    name: str = Field(pattern=ATTRIBUTE_NAME_PATTERN)
    type: Literal["category", "bool"]
    values: list[str] = Field(
        default_factory=list, max_length=MAX_CATEGORY_VALUES, description="category values"
    )
    rows_file: str
    offsets_file: str | None = None
    counts: list[int] = Field(
        default_factory=list, description="items per value (category) or [false, true] (bool)"
    )


def attribute_files(name: str, kind: Literal["category", "bool"]) -> tuple[str, str | None]:
    if kind == "bool":
        return f"attr.{name}.npy", None
    return f"attr.{name}.rows.npy", f"attr.{name}.offsets.npy"


class BuildParams(_Model):
    n_trees: int
    seed: int
    source: str
    source_sha256: str
    timings_s: dict[str, float] = Field(default_factory=dict, description="wall time per phase")


class SearchKPoint(_Model):
    search_k: int
    exact_items: int | None = Field(
        None, description="user -> items: items of the first norm bands scanned exactly"
    )
    bound_factor: float | None = Field(
        None, description="user -> items: the norm bound's factor (1: exact bound)"
    )
    recall_at_k: float
    recall_low: float | None = Field(
        None, description="95% lower bound of recall_at_k (mean - 2 standard errors)"
    )
    queries_per_s: float


# Used when a version has no measured threshold (--no-quality): a conservative guess, most
# filters are then scored exactly over the subset (always exact, slower only when selective
# filters are rare).
DEFAULT_FILTER_THRESHOLD = 0.2


class FilterPoint(_Model):
    """Filtered queries at one selectivity (random item subsets of that size)."""

    selectivity: float
    ann_recall_at_k: float
    ann_queries_per_s: float
    exact_queries_per_s: float = Field(description="exact scoring over the passing subset")


class IndexQuality(_Model):
    """How well one index answers, measured on the query path the worker runs (candidates +
    exact rerank), one query at a time on one thread, against exact brute force."""

    tuning_queries: int = Field(description="queries the curve and the choice were measured on")
    curve: list[SearchKPoint]
    search_k: int = Field(
        description="the smallest search_k reaching the target faster than the exact scan "
        "(strategy `exact`: the curve's best, used only by requests that set search_k)"
    )
    exact_items: int | None = Field(
        None, description="user -> items: the chosen exact head (items scanned exactly)"
    )
    bound_factor: float | None = Field(
        None,
        description="user -> items: the chosen norm bound factor (1: exact bound; below 1 lossy: "
        "a band that could still hold an answer may be skipped; 0: the exact head alone)",
    )
    reached_target: bool = Field(description="the index reached the target faster than a scan")
    heldout_queries: int = Field(description="other queries, measured only at search_k")
    recall_at_k: float = Field(description="held-out recall@k of what is served (exact: 1)")
    recall_low: float | None = Field(
        None, description="95% lower bound of the held-out recall (mean - 2 standard errors)"
    )
    queries_per_s: float = Field(description="held-out queries/s of what is served")
    brute_force_queries_per_s: float = Field(description="single-query exact scan, same run")
    strategy: Literal["ann", "exact"] = Field(
        "ann",
        description="what workers run: `exact` when no search_k reaches the target recall "
        "faster than the exact scan measured beside it",
    )
    filter_curve: list[FilterPoint] = Field(
        default_factory=list, description="filtered queries: ANN vs exact-over-subset"
    )
    filter_threshold: float = Field(
        DEFAULT_FILTER_THRESHOLD,
        ge=0.0,
        le=1.0,
        description="filtered requests passing fewer than this fraction of items are scored "
        "exactly over the passing subset; others search the index with over-fetch",
    )


class WalkPoint(_Model):
    """Similar items for k above the table's width, from a best-first search of the table."""

    k: int = Field(ge=1)
    beam: int = Field(2, ge=1, description="items the search keeps, in multiples of k")
    recall_at_k: float
    queries_per_s: float
    serves: bool = Field(
        False,
        description="workers walk with this beam for k above the previous serving point's k "
        "up to this one (the smallest beam that reached the target at this k)",
    )


class RefinePoint(_Model):
    """k within the table's width: the item's row refined by a best-first search of the table."""

    # Named `rounds` since the first versions (a round-based walk); versions keep loading.
    rounds: int = Field(
        ge=0, description="the search's beam, in multiples of k; 0: the row alone (a lookup)"
    )
    recall_at_k: float
    recall_low: float
    queries_per_s: float


class TableQuality(_Model):
    """item -> items from the neighbour table, measured on held-out items against exact scans."""

    width: int = Field(ge=0, description="M: the neighbours each item has in the table")
    heldout_queries: int
    refine: int = Field(
        0,
        ge=0,
        description="the beam (multiples of k) of the search refining a lookup that workers run: "
        "the smallest whose recall reached the table's aim, the version's target but at least "
        "0.99 (0: the row alone)",
    )
    refine_curve: list[RefinePoint] = Field(
        default_factory=list, description="every refining beam measured, in order"
    )
    recall_at_k: float = Field(description="held-out recall@k of what is served (refined)")
    recall_low: float = Field(description="95% lower bound of that recall (mean - 2 s.e.)")
    queries_per_s: float = Field(description="VersionSearch.similar_items through the table")
    serves: bool = Field(description="the table's recall reached the target: workers use it")
    walk: list[WalkPoint] = Field(
        default_factory=list,
        description="k above the width: a best-first search of the table at each beam tried, "
        "recall and speed",
    )
    walk_max_k: int = Field(
        0,
        ge=0,
        description="the walk serves k up to this (every measured k up to it reached the "
        "target); above it the angular index plan does",
    )
    walk_beam: int = Field(
        2,
        ge=1,
        description="the largest beam walks are served with (each k's own: `walk` points that "
        "serve)",
    )


class QualityReport(_Model):
    k: int
    target_recall: float
    similar_items: IndexQuality = Field(
        description="the angular index (or a scan): what serves what the table cannot"
    )
    recommend: IndexQuality
    neighbour_table: TableQuality | None = Field(
        None, description="None: the version has no neighbour table"
    )


Weighting = Literal["raw", "bm25", "tfidf"]
WEIGHTINGS: tuple[Weighting, ...] = ("raw", "bm25", "tfidf")


class RankingMetrics(_Model):
    """How one ranking does on the holdout: one held-out item per evaluated user, ranked among
    the items that user has not interacted with in training."""

    hit_rate_at_k: float = Field(
        ge=0.0, le=1.0, description="share of users whose item is in the top k"
    )
    ndcg_at_k: float = Field(
        ge=0.0, le=1.0, description="1 / log2(rank + 2) of that item, 0 outside the top k"
    )
    coverage: float = Field(
        ge=0.0, le=1.0, description="distinct items in any user's top k / items in the catalogue"
    )


class Evaluation(_Model):
    """The trained model against popularity on held-out interactions (index_builder/evaluate.py).

    The model evaluated is trained with the published parameters on everything but the holdout;
    the published factors are then trained on everything."""

    k: int = Field(10, ge=1)
    holdout: Literal["time", "file_order"] = Field(
        description="time: interactions from `cutoff` on are held out, each evaluated user's "
        "first new item after it is the target; file_order: the item each user met last"
    )
    cutoff: float | None = Field(
        None,
        description="time holdout: the first held-out timestamp, in the log's own numbers "
        "(ISO 8601 texts and Parquet times as epoch microseconds)",
    )
    holdout_users: int = Field(ge=0, description="users evaluated (sampled when there are more)")
    train_interactions: int = Field(ge=0, description="(user, item) pairs the evaluated model saw")
    seed: int = Field(description="seeds the sample of users and the model evaluated")
    model: RankingMetrics
    popularity: RankingMetrics = Field(
        description="the most popular items of the training part (by summed weight), the "
        "ranking a version serves when it has no model"
    )
    beats_popularity: bool = Field(description="the model's hit rate is above popularity's")


class TuningPoint(_Model):
    """One configuration tried, scored on the validation holdout (inside the training part)."""

    factors: int
    regularization: float
    alpha: float
    iterations: int
    weighting: Weighting
    hit_rate_at_k: float
    ndcg_at_k: float
    coverage: float
    seconds: float = Field(description="fit + evaluation wall time")


class Tuning(_Model):
    """The search over ALS parameters (index_builder/tune.py), by validation hit rate@k."""

    reason: Literal["--tune", "small log"]
    budget_s: float
    seconds: float = Field(description="the whole search, validation fits and evaluations")
    stopped: Literal["grid_done", "budget"]
    validation_users: int
    sample_rows: int = Field(
        0, description="rows the search fitted on: a sample of users when the log is large"
    )
    curve: list[TuningPoint] = Field(description="every configuration tried, in order")


class TrainParams(_Model):
    """How a set of factors was trained, so a published version can say where it came from."""

    algorithm: Literal["implicit.als"] = "implicit.als"
    factors: int = Field(ge=1)
    regularization: float = Field(ge=0.0, allow_inf_nan=False)
    alpha: float = Field(gt=0.0, allow_inf_nan=False)
    iterations: int = Field(ge=1)
    seed: int
    n_interactions: int = Field(ge=0)
    implicit_version: str
    weighting: Weighting = Field(
        "raw",
        description="confidence weighting of the interaction matrix before ALS: raw weights, "
        "or implicit.nearest_neighbours' bm25_weight / tfidf_weight",
    )
    evaluation: Evaluation | None = Field(
        None, description="holdout evaluation against popularity (None: nothing to hold out)"
    )
    tuning: Tuning | None = Field(None, description="the parameter search, when one ran")


class Bm25FoldIn(_Model):
    """What bm25 fold-in needs of the training matrix (implicit's bm25_weight over annrec's item x
    user matrix: an item's users are its document, so the length normalization is per item)."""

    k1: float = Field(ge=0, allow_inf_nan=False, description="bm25_weight's K1")
    b: float = Field(ge=0, le=1, description="bm25_weight's B")
    average_length: float = Field(
        gt=0, allow_inf_nan=False, description="mean summed weight per item (the average length)"
    )
    lengths_file: str = Field(
        description="float32, one per item: its summed interaction weight (its length)"
    )


class FoldIn(_Model):
    """How to fold a new user in from their items (the ALS user step); see vectors.fold_in and
    confidence.fold_in_confidences. Manifests without `weighting` fold in as raw."""

    regularization: float = Field(ge=0)
    alpha: float = Field(gt=0, description="confidence of one interaction (alpha * weight 1)")
    weighting: Weighting = Field(
        "raw",
        description="the weighting the factors were trained with, applied to a folded-in user's "
        "items too: raw alpha * count; tfidf alpha * sqrt(count) * idf(user); bm25 alpha * "
        "count (K1 + 1) / (K1 norm(item) + count) * idf(user)",
    )
    idf_items: int | None = Field(
        None,
        ge=1,
        description="tfidf and bm25: N, the items of the training matrix; a user with n distinct "
        "items has idf log(N) - log1p(n)",
    )
    bm25: Bm25FoldIn | None = Field(None, description="bm25 only: K1, B and the item lengths")

    @model_validator(mode="after")
    def _complete(self) -> FoldIn:
        if self.weighting != "raw" and self.idf_items is None:
            raise ValueError(f"fold_in weighting {self.weighting} needs idf_items")
        if (self.weighting == "bm25") != (self.bm25 is not None):
            raise ValueError("fold_in.bm25 is given exactly when the weighting is bm25")
        return self


class NeighbourTableSpec(_Model):
    """Two .npy files of shape (n_items, width): int32 neighbour rows and their float32 exact
    cosines, best first, the item itself excluded."""

    rows_file: str
    scores_file: str
    width: int = Field(ge=0)
    method: Literal["exact", "nndescent"] = Field(
        description="how the kNN graph was found: an exact scan (small catalogues) or NN-descent"
    )


class Manifest(_Model):
    format_version: int = FORMAT_VERSION
    version: str = Field(pattern=VERSION_PATTERN)
    created_at: datetime
    dim: int = Field(ge=1, description="K, the factor count")
    n_items: int = Field(ge=1)
    n_users: int = Field(ge=0)
    angular_index: AnnoySpec = Field(description="item -> items, cosine, over the raw item factors")
    mips_index: MipsSpec = Field(description="user -> items: norm bands of augmented items")
    mips_max_norm: float = Field(ge=0, description="the largest item norm")
    fold_in: FoldIn
    popularity: Literal["interactions", "provided", "item_norm"] = Field(
        description="what ranks popularity.npy: interaction weights, an item_popularity array "
        "given with the factors, or the item norm (a popularity proxy in MF factors)"
    )
    files: dict[str, FileEntry]
    build: BuildParams
    quality: QualityReport | None = Field(None, description="None: built with --no-quality")
    training: TrainParams | None = Field(
        None, description="how the factors were trained, when annrec trained them"
    )
    attributes: list[AttributeSpec] = Field(
        default_factory=list, description="item attributes requests can filter on"
    )
    item_updates_applied: int = Field(
        0, ge=0, description="item-updates (availability) folded into the attributes at build"
    )
    neighbour_table: NeighbourTableSpec | None = Field(
        None,
        description="every item's nearest items by cosine (item -> items); None: built without "
        "one (--neighbours 0), served by the angular index",
    )
    item_updates_through: dict[int, int] = Field(
        default_factory=dict,
        description="item-updates topic partition -> the offset the build read up to: workers "
        "apply only updates from there on (none named: all of them)",
    )
    item_vectors_applied: int = Field(
        0, ge=0, description="item-vectors events (upserts, removals) folded into the factors"
    )
    item_vectors_through: dict[int, int] = Field(
        default_factory=dict,
        description="item-vectors topic partition -> the offset the build read up to: a "
        "worker's fresh segment keeps only events from there on (none named: all of them)",
    )

    @field_validator("format_version")
    @classmethod
    def _known_format(cls, value: int) -> int:
        if value != FORMAT_VERSION:
            raise ValueError(
                f"format_version {value} is not {FORMAT_VERSION}: rebuild the version with this "
                "annrec (format 1 had a single MIPS file)"
            )
        return value

    @field_validator("files")
    @classmethod
    def _plain_names(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for name in files:
            if "/" in name or "\\" in name or name in ("", ".", ".."):
                raise ValueError(f"file name {name!r} is not a plain name")
        return files


# The files of every version, by role.
ANGULAR_FILE = "items.angular.ann"
MIPS_ORDER_FILE = "items.mips.order.npy"


def mips_band_file(band: int) -> str:
    return f"items.mips.band{band:02d}.ann"


ITEM_FACTORS_FILE = "item_factors.npy"
USER_FACTORS_FILE = "user_factors.npy"
ITEM_IDS_FILE = "item_ids.npy"
USER_IDS_FILE = "user_ids.npy"
POPULARITY_FILE = "popularity.npy"  # int32 item rows, most popular first
FOLD_IN_LENGTHS_FILE = "fold_in.item_lengths.npy"  # bm25 versions: float32 length per item
NEIGHBOURS_FILE = "neighbours.rows.npy"  # int32 (n_items, width)
NEIGHBOUR_SCORES_FILE = "neighbours.scores.npy"  # float32 (n_items, width)
