"""`annrec build --interactions` as a user meets it: the version says how the model does against
popularity, the figures can be recomputed from the published version and the log, and a model
weaker than popularity is refused with both figures."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from index_builder.train import load_interactions, train_als
from schemas.layout import version_dir
from schemas.manifest import ITEM_FACTORS_FILE, USER_FACTORS_FILE, Manifest
from tests.cli import annrec

BUILD = ("--no-announce", "--no-quality", "--trees", "2", "--mips-trees", "2")


def _manifest(storage, version) -> Manifest:
    return Manifest.model_validate_json(
        (version_dir(storage, version) / "manifest.json").read_text()
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A synthetic log, and the version `annrec build` made of it with its defaults."""
    tmp = tmp_path_factory.mktemp("evaluated")
    log, storage = tmp / "log.parquet", tmp / "s"
    synth = annrec(
        "synth", "--users", "300", "--items", "400", "--per-user", "20", "--out", str(log)
    )
    assert synth.returncode == 0, synth.stderr
    result = annrec("build", "--interactions", str(log), "--storage", str(storage), *BUILD)
    assert result.returncode == 0, result.stderr
    return log, storage, result.stdout.strip()


def test_a_small_log_is_tuned_evaluated_and_listed(built):
    _, storage, version = built
    training = _manifest(storage, version).training
    assert training is not None and training.tuning is not None
    assert training.tuning.reason == "small log" and len(training.tuning.curve) >= 10
    e = training.evaluation
    assert e is not None and e.beats_popularity and e.holdout == "file_order"
    assert e.model.hit_rate_at_k >= 1.5 * e.popularity.hit_rate_at_k
    listed = annrec("versions", "list", "--storage", str(storage))
    assert listed.returncode == 0, listed.stderr
    assert f"hit@10 {e.model.hit_rate_at_k:.4f} (popularity {e.popularity.hit_rate_at_k:.4f})" in (
        listed.stdout
    )
    rows = json.loads(annrec("versions", "list", "--json", "--storage", str(storage)).stdout)
    assert rows[-1]["evaluation"]["model"]["hit_rate_at_k"] == e.model.hit_rate_at_k


def test_the_evaluation_is_reproduced_from_the_published_version_and_the_log(built):
    """Recomputed independently: the held-out pair per user (its newest item), ALS with the
    parameters the manifest records on everything else, every item ranked user by user."""
    log, storage, version = built
    manifest = _manifest(storage, version)
    t = manifest.training
    assert t is not None and t.evaluation is not None
    full = load_interactions(log)
    params = {
        "factors": t.factors,
        "regularization": t.regularization,
        "alpha": t.alpha,
        "iterations": t.iterations,
        "weighting": t.weighting,
        "seed": t.seed,
    }
    # The published factors are these parameters trained on everything.
    published, _ = train_als(full, show_progress=False, **params)
    directory = version_dir(storage, version)
    np.testing.assert_array_equal(np.load(directory / ITEM_FACTORS_FILE), published.item_factors)
    np.testing.assert_array_equal(np.load(directory / USER_FACTORS_FILE), published.user_factors)

    table = pq.read_table(log).to_pydict()
    users = np.searchsorted(full.user_ids, np.asarray(table["user"]))
    items = np.searchsorted(full.item_ids, np.asarray(table["item"]))
    first_row: dict[tuple[int, int], int] = {}
    for row, pair in enumerate(zip(users.tolist(), items.tolist(), strict=True)):
        first_row.setdefault(pair, row)
    newest: dict[int, int] = {}
    for u, i in sorted(first_row, key=first_row.__getitem__):  # the last one a user met wins
        newest[u] = i
    n_items = Counter(u for u, _ in first_row)
    newest = {u: i for u, i in newest.items() if n_items[u] >= 2}
    held = set(newest.items())
    keep = [(u, i) not in held for u, i in zip(users.tolist(), items.tolist(), strict=True)]
    weights = np.asarray(table["weight"], dtype=np.float64)[keep]
    train = sp.csr_matrix((weights, (users[keep], items[keep])), shape=full.user_items.shape)
    rest = load_interactions_from(train, full)
    model, _ = train_als(rest, show_progress=False, **params)
    popularity = np.asarray(train.sum(axis=0)).ravel()
    got_model = _naive_metrics(model.user_factors @ model.item_factors.T, train, newest)
    got_pop = _naive_metrics(np.tile(popularity, (len(full.user_ids), 1)), train, newest)
    e = t.evaluation
    n = e.holdout_users
    assert n == len(newest)
    for got, want in ((got_model, e.model), (got_pop, e.popularity)):
        assert got[0] == pytest.approx(want.hit_rate_at_k, abs=1.01 / n)
        assert got[1] == pytest.approx(want.ndcg_at_k, abs=1.01 / n)
        assert got[2] == pytest.approx(want.coverage, abs=0.01)


def load_interactions_from(matrix: sp.csr_matrix, full):
    from index_builder.train import Interactions

    matrix = matrix.astype(np.float32).tocsr()
    matrix.eliminate_zeros()
    matrix.sort_indices()
    return Interactions(full.user_ids, full.item_ids, matrix)


def _naive_metrics(scores, train, targets: dict[int, int]) -> tuple[float, float, float]:
    hits, gain, shown = 0, 0.0, set()
    for u, target in targets.items():
        row = scores[u].astype(np.float64)
        row[train[u].indices] = -np.inf
        top = sorted(range(len(row)), key=lambda i: (-row[i], i))[:10]
        shown.update(top)
        if target in top:
            hits += 1
            gain += 1 / np.log2(top.index(target) + 2)
    return hits / len(targets), gain / len(targets), len(shown) / scores.shape[1]


def test_a_model_weaker_than_popularity_is_refused_with_both_figures(tmp_path):
    rng = np.random.default_rng(0)
    popularity = 1 / np.arange(1, 301) ** 0.9
    users = np.repeat(np.arange(400), 12)
    items = rng.choice(300, size=len(users), p=popularity / popularity.sum())
    log = tmp_path / "noise.parquet"
    pq.write_table(pa.table({"user": users, "item": items}), log)
    args = ("build", "--interactions", str(log), "--storage", str(tmp_path / "s"), *BUILD)
    refused = annrec(*args, "--als-factors", "16")
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert lines[-1].startswith("annrec: error: the trained model does not beat popularity")
    assert "hit rate@10 0." in lines[-1] and "vs popularity 0." in lines[-1]
    assert not (tmp_path / "s" / "LATEST").exists()
    allowed = annrec(*args, "--als-factors", "16", "--allow-weak-model")
    assert allowed.returncode == 0, allowed.stderr
    training = _manifest(tmp_path / "s", allowed.stdout.strip()).training
    assert training is not None and training.evaluation is not None
    assert not training.evaluation.beats_popularity and training.tuning is None
