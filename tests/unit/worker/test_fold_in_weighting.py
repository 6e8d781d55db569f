"""Known answers: a version trained on tfidf or bm25 weights folds `recent_items` in with the same
weights, so a training user's own items give the vector implicit's recalculate_user gives for
that user's weighted row; raw versions, and manifests from before the weighting was recorded,
fold in exactly as before."""

from __future__ import annotations

import json

import numpy as np
import pytest

from index_builder.publish import BuildOptions, publish_version
from index_builder.synth import synth_interactions
from index_builder.train import make_interactions, train_als, weigh
from query_engine.confidence import fold_in_confidences, item_confidences
from query_engine.vectors import fold_in, item_gramian
from schemas import manifest as mf
from schemas.errors import IndexRejected
from schemas.events import RecommendRequest
from worker.answer import answer
from worker.index_store import load_version

pytest.importorskip("implicit")

USERS = (0, 7, 31, 99)


@pytest.fixture(scope="module")
def interactions():
    users, items, weights = synth_interactions(120, 200, dim=8, interactions_per_user=12, seed=4)
    return make_interactions(users, items, weights)


def _train(interactions, weighting):
    return train_als(
        interactions,
        factors=8,
        regularization=0.05,
        alpha=4.0,
        iterations=4,
        show_progress=False,
        weighting=weighting,
    )


def _implicit_user(factors, params, weighted_row):
    """implicit's own ALS user step (Cholesky) for one weighted row."""
    import implicit.cpu.als

    model = implicit.cpu.als.AlternatingLeastSquares(
        factors=params.factors, regularization=params.regularization, alpha=params.alpha
    )
    model.item_factors = factors.item_factors
    return np.ravel(model.recalculate_user(0, weighted_row))


@pytest.mark.parametrize("weighting", ["tfidf", "bm25"])
def test_fold_in_of_a_training_user_is_implicits_recalculate_user(interactions, weighting):
    factors, params = _train(interactions, weighting)
    weights = factors.fold_in
    assert weights is not None and weights.weighting == weighting
    weighted = weigh(interactions.user_items, weighting)
    gram = item_gramian(factors.item_factors)
    for u in USERS:
        row = interactions.user_items[u]
        conf = item_confidences(weights, row.indices, row.data)
        # The confidences are exactly the fitted matrix's row times alpha, in float32.
        w_row = weighted[u]
        assert w_row.indices.tolist() == row.indices.tolist()
        np.testing.assert_array_equal(
            conf, (w_row.data * np.float32(params.alpha)).astype(np.float64)
        )
        got = fold_in(gram, factors.item_factors[row.indices], params.regularization, conf)
        want = _implicit_user(factors, params, w_row)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        # The raw convention (alpha per item) is not that vector: the bug this fixes.
        raw = fold_in(gram, factors.item_factors[row.indices], params.regularization, params.alpha)
        assert np.abs(raw - want).max() > 100 * np.abs(got - want).max()


@pytest.mark.parametrize("weighting", ["tfidf", "bm25"])
def test_a_published_version_folds_recent_items_in_with_its_weighting(
    tmp_path, interactions, weighting
):
    factors, params = _train(interactions, weighting)
    storage = tmp_path / "storage"
    manifest = publish_version(
        factors, storage, BuildOptions(n_trees=5, seed=1, quality=False), training=params
    )
    f = manifest.fold_in
    assert f.weighting == weighting and f.idf_items == manifest.n_items == len(
        interactions.item_ids
    )
    assert (f.bm25 is not None) == (weighting == "bm25")
    assert (mf.FOLD_IN_LENGTHS_FILE in manifest.files) == (weighting == "bm25")
    weighted = weigh(interactions.user_items, weighting)
    v = load_version(storage, manifest.version)
    try:
        assert v.fold_in.weighting == weighting
        for u in USERS:
            row = interactions.user_items[u]
            # The user's log as recent items: each interaction once (integer weights).
            recent = [
                str(interactions.item_ids[i])
                for i, c in zip(row.indices, row.data, strict=True)
                for _ in range(int(c))
            ]
            reply = answer(RecommendRequest(request_id="r", recent_items=recent, k=5), v, "w")
            want = _implicit_user(factors, params, weighted[u])
            got = [i.score for i in reply.items]
            expected = factors.item_factors[v.item_rows.rows([i.item_id for i in reply.items])[0]]
            np.testing.assert_allclose(got, expected @ want, rtol=1e-4, atol=1e-5)
            # and those are the best 5 items for implicit's vector
            best = np.sort(factors.item_factors @ want)[::-1][:5]
            np.testing.assert_allclose(got, best, rtol=1e-4, atol=1e-5)
            explained = answer(
                RecommendRequest(request_id="e", recent_items=recent, k=5, explain=True), v, "w"
            )
            for item in explained.items:
                assert item.because and len({c.item_id for c in item.because}) == len(item.because)
                assert item.score is not None
                total = sum(c.score / c.share for c in item.because[:1] if c.share)
                np.testing.assert_allclose(total, item.score, rtol=1e-4, atol=1e-5)
    finally:
        v.close()
    if weighting == "bm25":  # the lengths file is verified like every other array
        path = storage / "versions" / manifest.version / mf.FOLD_IN_LENGTHS_FILE
        lengths = np.load(path)
        lengths[3] += 1.0
        np.save(path, lengths)
        with pytest.raises(IndexRejected, match="sha256"):
            load_version(storage, manifest.version)


def _recent_vector(v, rows):
    f = v.manifest.fold_in
    return fold_in(v.gramian, np.asarray(v.item_factors[rows]), f.regularization, f.alpha)


def test_a_raw_version_folds_in_exactly_as_before(version):
    """Raw: each recent item (a repeat too) is a row of confidence alpha, bit for bit."""
    assert version.manifest.fold_in.weighting == "raw" and version.fold_in.weighting == "raw"
    recent = ["i5", "i9", "i5", "i120"]
    rows = version.item_rows.rows(recent)[0]
    got_rows, confidence = fold_in_confidences(version.fold_in, rows)
    assert got_rows.tolist() == rows.tolist() and confidence == version.manifest.fold_in.alpha
    reply = answer(RecommendRequest(request_id="r", recent_items=recent, k=8), version, "w")
    query = _recent_vector(version, rows)
    scores = (np.asarray(version.item_factors) @ query).astype(np.float32)
    assert [i.score for i in reply.items] == [float(s) for s in np.sort(scores)[::-1][:8]]


def test_an_old_manifest_without_the_weighting_loads_and_folds_in_raw(published):
    storage, manifest = published
    path = storage / "versions" / manifest.version / mf.MANIFEST_NAME
    data = json.loads(path.read_text())
    for key in ("weighting", "idf_items", "bm25"):
        data["fold_in"].pop(key)
    assert set(data["fold_in"]) == {"regularization", "alpha"}
    path.write_text(json.dumps(data))
    v = load_version(storage, manifest.version)
    try:
        assert v.manifest.fold_in.weighting == "raw" and v.fold_in.weighting == "raw"
        recent = ["i3", "i40", "i3"]
        reply = answer(RecommendRequest(request_id="r", recent_items=recent, k=5), v, "w")
        query = _recent_vector(v, v.item_rows.rows(recent)[0])
        scores = (np.asarray(v.item_factors) @ query).astype(np.float32)
        assert [i.score for i in reply.items] == [float(s) for s in np.sort(scores)[::-1][:5]]
    finally:
        v.close()


def test_a_weighted_fold_in_without_its_parameters_is_refused():
    with pytest.raises(ValueError, match="idf_items"):
        mf.FoldIn(regularization=0.1, alpha=1.0, weighting="tfidf")
    with pytest.raises(ValueError, match="bm25"):
        mf.FoldIn(regularization=0.1, alpha=1.0, weighting="bm25", idf_items=10)
