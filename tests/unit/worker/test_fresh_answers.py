"""The fresh segment through the worker's answer path, against brute force over
(version + segment - removals): upserts of new and of version items, removals, filters,
availability, exclusions."""

import json

import numpy as np
import pytest

from index_builder.attributes import table_from_columns
from index_builder.publish import BuildOptions, publish_version
from query_engine.vectors import cosine_scores
from schemas.events import ItemVector, parse_request
from worker.answer import BadRequest, answer
from worker.availability import apply_updates
from worker.fresh import apply_event, vector_refusal
from worker.index_store import load_version

N = 300
COLORS = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    from index_builder.synth import synth_factors

    factors = synth_factors(n_items=N, n_users=40, dim=8, n_clusters=6, seed=3)
    ids = factors.item_ids.tolist()
    table = table_from_columns(
        {
            "item_id": ids,
            "color": [COLORS[i % 3] for i in range(N)],
            "in_stock": ["true"] * N,
        },
        ids,
    )
    storage = tmp_path_factory.mktemp("fresh")
    manifest = publish_version(
        factors, storage, BuildOptions(n_trees=10, seed=1, quality=False), attributes=table
    )
    return storage, manifest.version, factors


@pytest.fixture
def fresh(published):
    """A freshly loaded version (empty segment) with seeded events applied: 30 new items
    (n0..n29, some of a colour the version does not know), 10 version items given new vectors,
    8 version items and 3 new ones removed. Also the combined catalogue, brute force's input."""
    storage, name, factors = published
    v = load_version(storage, name)
    rng = np.random.default_rng(7)
    vectors = {f"i{i}": factors.item_factors[i].copy() for i in range(N)}
    colors = {f"i{i}": COLORS[i % 3] for i in range(N)}
    scale = float(np.linalg.norm(factors.item_factors, axis=1).mean())
    for j in range(30):
        vec = rng.normal(size=8).astype(np.float32)
        vec *= scale * rng.uniform(0.5, 2.0) / np.linalg.norm(vec)
        color = "violet" if j % 5 == 0 else COLORS[j % 3]
        apply_event(
            v, ItemVector(item_id=f"n{j}", vector=vec.tolist(), attributes={"color": color})
        )
        vectors[f"n{j}"], colors[f"n{j}"] = vec, color
    for i in rng.choice(N, 10, replace=False).tolist():
        vec = rng.normal(size=8).astype(np.float32) * scale / 2
        apply_event(v, ItemVector(item_id=f"i{i}", vector=vec.tolist()))  # keeps its colour
        vectors[f"i{i}"] = vec
    gone = [f"i{i}" for i in rng.choice(N, 8, replace=False).tolist()] + ["n1", "n2", "n3"]
    for item in gone:
        apply_event(v, ItemVector(item_id=item, removed=True))
        del vectors[item]
    yield v, factors, vectors, colors, gone
    v.close()


def _ask(v, **fields):
    doc = {"request_id": "r", "kind": "recommend", **fields}
    return answer(parse_request(json.dumps(doc).encode()), v, "w")


def _ids(reply):
    return [i.item_id for i in reply.items]


def _truth(vectors, query, k, cosine=False, keep=lambda _i: True, exclude=()):
    ids = [i for i in vectors if keep(i) and i not in exclude]
    m = np.stack([vectors[i] for i in ids])
    scores = cosine_scores(m, np.linalg.norm(m, axis=1), query) if cosine else m @ query
    return [ids[j] for j in np.argsort(-scores, kind="stable")[:k]]


def test_recommend_is_brute_force_over_version_plus_segment_minus_removals(fresh):
    v, factors, vectors, _, gone = fresh
    for u in range(20):
        user = factors.user_factors[u]
        reply = _ask(v, user_id=f"u{u}", k=10)
        assert _ids(reply) == _truth(vectors, user, 10)
        assert not set(_ids(reply)) & set(gone)
    assert len(v.fresh) == 27 + 10  # 30 new - 3 removed, 10 upserted version items


def test_similar_items_of_version_and_fresh_items_are_brute_force(fresh):
    v, _, vectors, _, _ = fresh
    for item in ["i0", "i17", "n0", "n7", *[i for i in vectors if i.startswith("i")][:5]]:
        reply = answer(
            parse_request(
                json.dumps(
                    {"request_id": "r", "kind": "similar_items", "item_id": item, "k": 8}
                ).encode()
            ),
            v,
            "w",
        )
        assert _ids(reply) == _truth(vectors, vectors[item], 8, cosine=True, exclude={item})


def test_a_removed_item_is_unknown_and_never_filled(fresh):
    v, _, vectors, _, gone = fresh
    for item in gone:
        with pytest.raises(BadRequest, match="unknown item_id"):
            answer(
                parse_request(
                    json.dumps(
                        {"request_id": "r", "kind": "similar_items", "item_id": item}
                    ).encode()
                ),
                v,
                "w",
            )
    cold = _ask(v, user_id="nobody", k=1000)  # the whole catalogue, from the popularity fill
    assert not set(_ids(cold)) & set(gone)
    everything = _ask(v, user_id="u1", k=1000)
    assert set(_ids(everything)) == set(vectors)


def test_filters_exclusions_and_availability_apply_to_fresh_items(fresh):
    v, factors, vectors, colors, _ = fresh
    user = factors.user_factors[4]
    for color in ("red", "violet"):
        reply = _ask(v, user_id="u4", k=10, filter={"attr": "color", "eq": color})
        passing = {i for i in vectors if colors[i] == color}
        assert _ids(reply) == _truth(vectors, user, 10, keep=passing.__contains__)
    not_violet = _ask(v, user_id="u4", k=10, filter={"not": {"attr": "color", "eq": "violet"}})
    passing = {i for i in vectors if colors[i] != "violet"}
    assert _ids(not_violet) == _truth(vectors, user, 10, keep=passing.__contains__)
    best_fresh = next(i for i in _ids(_ask(v, user_id="u4", k=50)) if i.startswith("n"))
    excluded = _ask(v, user_id="u4", k=50, exclude_items=[best_fresh])
    assert best_fresh not in _ids(excluded)
    apply_updates(v, {("in_stock", best_fresh): False})
    in_stock = _ask(v, user_id="u4", k=50, filter={"attr": "in_stock", "eq": True})
    assert best_fresh not in _ids(in_stock)
    allowed = _ask(v, user_id="u4", k=2, allow_items=[best_fresh, "i5"])
    assert best_fresh in _ids(allowed)


def test_an_item_given_by_its_first_users_gets_the_als_item_step(published):
    storage, name, factors = published
    v = load_version(storage, name)
    try:
        users = ["u1", "u2", "u5", "nobody"]  # an unknown user is ignored
        apply_event(v, ItemVector(item_id="by-users", users=users))
        local = v.fresh.local("by-users")
        assert local is not None
        # The implicit ALS item step, written out: (X^T X + X_u^T (C - I) X_u + reg I) y =
        # X_u^T C 1, each known user one interaction of confidence alpha.
        x = factors.user_factors.astype(np.float64)
        xu = x[[1, 2, 5]]
        spec = v.manifest.fold_in
        a = x.T @ x + (spec.alpha - 1) * xu.T @ xu + spec.regularization * np.eye(8)
        expected = np.linalg.solve(a, spec.alpha * xu.sum(axis=0))
        np.testing.assert_allclose(v.fresh.vector(local), expected, rtol=1e-4, atol=1e-6)
        refused = ItemVector(item_id="lonely", users=["nobody"])
        assert "none of its users is known" in (vector_refusal(v, refused) or "")
        assert apply_event(v, refused) == "refused" and v.fresh.local("lonely") is None
    finally:
        v.close()
