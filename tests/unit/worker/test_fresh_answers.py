"""The fresh segment through the worker's answer path, against brute force over
(version + segment - removals): upserts of new and of version items, removals, filters,
availability, exclusions."""

import json
import threading

import numpy as np
import pytest

from index_builder.attributes import table_from_columns
from index_builder.publish import BuildOptions, publish_version
from query_engine import segment_kernels, segment_neighbours
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
    assert v.fresh.settle(np.inf) == 27 + 10  # every upserted item's neighbours found
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


def _similar(v, item, k=8, exact=False, **fields):
    doc = {"request_id": "r", "kind": "similar_items", "item_id": item, "k": k, **fields}
    return answer(parse_request(json.dumps(doc).encode()), v, "w", exact=exact)


@pytest.mark.parametrize("pending", [0, 1000])
def test_similar_items_read_the_fresh_items_found_at_their_upsert(fresh, monkeypatch, pending):
    """Every item's similar items (version and fresh items) are brute force over version +
    segment - removals, and almost all of them come from the candidates found at the upserts
    (segment_neighbours), not from a scan: from the sorted attachments (pending 0: sorted at
    each settle) or from the items not sorted in yet, and a fresh item whose neighbours are
    not found yet (pending 1000) among them. A fresh item moved next to another by a new
    vector is withdrawn from its old places."""
    monkeypatch.setattr(segment_neighbours, "PENDING", pending)
    v, _, vectors, _, _ = fresh
    near = next(i for i in vectors if i.startswith("i") and v.fresh.local(i) is None)
    nudge = np.random.default_rng(11).normal(size=8) * 0.05 * np.linalg.norm(vectors[near])
    twin = (vectors[near] + nudge).astype(np.float32)  # not parallel: no tie with `near`
    apply_event(v, ItemVector(item_id="n0", vector=twin.tolist()))
    vectors["n0"] = twin
    if pending == 0:
        assert v.fresh.settle(np.inf) == 1
    found = v.fresh.neighbours.candidates(v.item_rows.get(near), np.inf)
    assert v.fresh.local("n0") in found.tolist()
    looked_up = []
    above = v.fresh.neighbours.above

    def counted(key, floor, units, query):
        found = above(key, floor, units, query)
        looked_up.append(found is not None)
        return found

    monkeypatch.setattr(v.fresh.neighbours, "above", counted)
    for item in vectors:
        truth = _truth(vectors, vectors[item], 8, cosine=True, exclude={item})
        assert _ids(_similar(v, item)) == truth
        assert _ids(_similar(v, item, exact=True)) == truth
    assert sum(looked_up) >= 0.8 * len(vectors)
    assert _ids(_similar(v, near))[0] == "n0"


@pytest.mark.parametrize("pending", [0, 1000])
def test_the_compiled_read_of_the_attachments_finds_what_the_lists_hold(
    fresh, monkeypatch, pending
):
    """`above` (for a version item: the cosines computed when it was listed) returns exactly
    the candidates that `candidates` lists whose cosine with the query beats the floor, each
    once, with their cosine, best first: from the sorted lists (pending 0) and from the items
    placed since the sort or not placed yet (pending 1000)."""
    monkeypatch.setattr(segment_neighbours, "PENDING", pending)
    v, _, vectors, _, _ = fresh
    rng = np.random.default_rng(3)
    for j in range(6):  # some placed, some waiting
        vec = rng.normal(size=8).astype(np.float32)
        apply_event(v, ItemVector(item_id=f"a{j}", vector=vec.tolist()))
        if j < 3:
            v.fresh.settle(np.inf)
    neighbours, units = v.fresh.neighbours, v.fresh._units
    compared = 0
    for item in [i for i in vectors if i.startswith("i") and v.fresh.local(i) is None]:
        key = v.item_rows.get(item)
        query = np.asarray(v.item_factors[key])
        norm = float(np.linalg.norm(query))
        for floor in (np.inf, 0.9, 0.5, -0.2):
            listed = neighbours.candidates(key, floor)
            got = neighbours.above(key, floor, units, query)
            assert (listed is None) == (got is None)
            if listed is None:
                continue
            cosine = units[listed] @ query / norm
            passing = listed[cosine > floor]
            rows, cosines = [r for _, r in got], [c for c, _ in got]
            assert sorted(rows) == sorted(set(passing.tolist()))  # each once
            by_row = dict(zip(listed.tolist(), cosine.tolist(), strict=True))
            np.testing.assert_allclose(cosines, [by_row[r] for r in rows], rtol=1e-5)
            assert cosines == sorted(cosines, reverse=True)  # best first
            compared += len(passing)
    assert compared > 0  # some candidate passed some floor: the comparison saw rows


@pytest.mark.parametrize("pending", [0, 1000])
def test_items_moved_or_removed_after_they_were_listed_leave_their_old_places(
    fresh, monkeypatch, pending
):
    """Twins of two version items are listed under them (sorted into the lists at the settle,
    pending 0; or kept by version row until a sort, pending 1000). Then one twin gets a far
    vector and the other is removed: the version items' similar items are brute force over
    version + segment - removals, before the new vector is placed and after."""
    monkeypatch.setattr(segment_neighbours, "PENDING", pending)
    v, _, vectors, _, _ = fresh
    near = [i for i in vectors if i.startswith("i") and v.fresh.local(i) is None][:2]
    rng = np.random.default_rng(13)
    for j, item in enumerate(near):
        nudge = rng.normal(size=8) * 0.05 * np.linalg.norm(vectors[item])
        vectors[f"m{j}"] = (vectors[item] + nudge).astype(np.float32)
        apply_event(v, ItemVector(item_id=f"m{j}", vector=vectors[f"m{j}"].tolist()))
    assert v.fresh.settle(np.inf) == 2
    assert [_ids(_similar(v, item))[0] for item in near] == ["m0", "m1"]
    vectors["m0"] = -vectors[near[0]]
    apply_event(v, ItemVector(item_id="m0", vector=vectors["m0"].tolist()))
    apply_event(v, ItemVector(item_id="m1", removed=True))
    del vectors["m1"]
    for placed in (False, True):
        if placed:
            assert v.fresh.settle(np.inf) == 1
        for item in near:
            truth = _truth(vectors, vectors[item], 8, cosine=True, exclude={item})
            assert _ids(_similar(v, item)) == truth


def test_upserts_wait_for_the_reverse_table_and_are_read_meanwhile(published, monkeypatch):
    """A version's table is read backwards in a thread at its first upsert: until that is
    done, upserted items wait (a settle with a short budget places none) and every request
    reads them, so answers hold them all along."""
    release = threading.Event()
    reverse_rows = segment_kernels.reverse_rows

    def held(rows):
        if len(rows) > 1:  # the version's table, not segment_kernels.warm()'s one-row ones
            release.wait(30)
        return reverse_rows(rows)

    monkeypatch.setattr(segment_kernels, "reverse_rows", held)
    storage, name, factors = published
    v = load_version(storage, name)
    try:
        near = "i5"
        twin = factors.item_factors[5] * 1.01 + 0.01
        apply_event(v, ItemVector(item_id="t0", vector=twin.tolist()))
        assert v.fresh.settle(0.05) == 0 and v.fresh.neighbours.waiting == 1
        assert _ids(_similar(v, near))[0] == "t0"
        release.set()
        assert v.fresh.settle(np.inf) == 1 and v.fresh.neighbours.waiting == 0
        assert _ids(_similar(v, near))[0] == "t0"
    finally:
        release.set()
        v.close()


def test_requests_never_sort_the_attachments_however_many_items_wait(fresh, monkeypatch):
    """Upserts faster than their share of the thread leave more than PENDING items waiting to
    be placed: requests read them all, but the attachments are sorted between batches only,
    once per PENDING items placed (a sort is O(n_items); each request sorted again before)."""
    monkeypatch.setattr(segment_neighbours, "PENDING", 4)
    v, _, vectors, _, _ = fresh
    neighbours = v.fresh.neighbours
    sorts = []
    sort = neighbours._sort
    monkeypatch.setattr(neighbours, "_sort", lambda: sorts.append(1) or sort())
    rng = np.random.default_rng(5)
    for j in range(10):  # 10 > PENDING waiting, none placed
        vec = rng.normal(size=8).astype(np.float32)
        apply_event(v, ItemVector(item_id=f"w{j}", vector=vec.tolist()))
        vectors[f"w{j}"] = vec
    waiting = {v.fresh.local(f"w{j}") for j in range(10)}
    for item in [i for i in vectors if i.startswith("i")][:20]:
        found = neighbours.candidates(v.item_rows.get(item), np.inf)
        assert found is not None and waiting <= set(found.tolist())  # read, as a scan
        truth = _truth(vectors, vectors[item], 8, cosine=True, exclude={item})
        assert _ids(_similar(v, item)) == truth
    assert sorts == []
    assert v.fresh.settle(np.inf) == 10 and len(sorts) == 1  # 10 placed: sorted once, after


def _greedy(vectors, colors, query, k, n, cosine=False, exclude=()):
    taken, count = [], {}
    for item in _truth(vectors, query, len(vectors), cosine=cosine, exclude=exclude):
        if count.get(colors[item], 0) < n:
            taken.append(item)
            count[colors[item]] = count.get(colors[item], 0) + 1
    return taken[:k]


@pytest.mark.parametrize(("n", "k"), [(1, 4), (2, 7)])
def test_max_per_counts_fresh_items_with_the_versions(fresh, n, k):
    """max_per over version + segment: the fresh items' values (a colour only they have
    included) share the places with the version's items, brute force's greedy walk."""
    v, factors, vectors, colors, _ = fresh
    max_per = {"attr": "color", "n": n}
    with_fresh = 0
    for u in range(15):
        reply = _ask(v, user_id=f"u{u}", k=k, max_per=max_per)
        truth = _greedy(vectors, colors, factors.user_factors[u], k, n)
        assert _ids(reply) == truth
        with_fresh += any(i.startswith("n") for i in truth)
    for item in [i for i in vectors if i.startswith(("i", "n"))][::15]:
        reply = _similar(v, item, k=k, max_per=max_per)
        assert _ids(reply) == _greedy(
            vectors, colors, vectors[item], k, n, cosine=True, exclude={item}
        )
    assert with_fresh >= 5  # the fresh items took places


def test_explain_covers_fresh_items(fresh):
    """A fresh item in an explained reply has its score decomposed like a version item's: the
    contributions of the recent items add up to its score (with its new vector)."""
    v, _, _, _, _ = fresh
    reply = _ask(v, recent_items=["i11", "i12"], k=60, explain=True)
    fresh_items = [i for i in reply.items if v.fresh.local(i.item_id) is not None]
    assert fresh_items
    for item in reply.items:
        assert item.because, item.item_id
        assert sum(c.score for c in item.because) == pytest.approx(item.score, rel=1e-3, abs=1e-5)
