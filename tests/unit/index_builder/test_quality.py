import numpy as np
import pytest

from index_builder import publish
from index_builder.publish import BuildOptions, QualityTooLow, publish_version
from index_builder.synth import synth_factors
from query_engine import banded
from query_engine.vectors import exact_inner_product_top_k, recall_at_k
from schemas.layout import list_versions, read_latest
from worker.index_store import load_version


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    factors = synth_factors(n_items=4000, n_users=600, dim=16, n_clusters=20, seed=5)
    storage = tmp_path_factory.mktemp("tuned")
    manifest = publish_version(factors, storage, BuildOptions(n_trees=8, target_recall=0.9))
    return factors, storage, manifest


def test_report_curve_and_choice_are_consistent(tuned):
    _, _, manifest = tuned
    report = manifest.quality
    assert report is not None and report.k == 10 and report.target_recall == 0.9
    for q in (report.similar_items, report.recommend):
        groups = [(p.exact_items, p.bound_factor) for p in q.curve]
        for group in dict.fromkeys(groups):  # per (head, factor); one group for item -> items
            ks = [p.search_k for p in q.curve if (p.exact_items, p.bound_factor) == group]
            assert ks == sorted(ks) and len(set(ks)) == len(ks)
        winning = [
            p
            for p in q.curve
            if p.recall_at_k >= 0.9 and p.queries_per_s >= q.brute_force_queries_per_s
        ]
        assert q.reached_target == bool(winning)
        if winning:  # the fastest point that reaches the target faster than a scan
            best = max(winning, key=lambda p: p.queries_per_s)
            assert q.strategy == "ann"
            assert (q.search_k, q.exact_items, q.bound_factor) == (
                best.search_k,
                best.exact_items,
                best.bound_factor,
            )
        else:  # no search_k does: scan, exactly
            assert q.strategy == "exact" and q.recall_at_k == 1.0
        assert q.tuning_queries == q.heldout_queries == 200
        assert q.queries_per_s > 0 and q.brute_force_queries_per_s > 0


def test_curve_recall_is_what_the_query_path_achieves_on_fresh_queries(tuned):
    factors, storage, manifest = tuned
    curve = manifest.quality.recommend.curve
    point = min(curve, key=lambda p: abs(p.recall_at_k - 0.9))
    version = load_version(storage, manifest.version)
    rng = np.random.default_rng(123)
    queries = rng.standard_normal((300, 16)).astype(np.float32) + factors.user_factors[:300]
    recalls = [
        recall_at_k(
            banded.max_inner_product(
                version.search.mips, q, 10, point.search_k, point.exact_items, point.bound_factor
            )[0],
            exact_inner_product_top_k(factors.item_factors, q, 10),
        )
        for q in queries
    ]
    version.close()
    assert np.mean(recalls) == pytest.approx(point.recall_at_k, abs=0.1)


def test_a_build_below_the_minimum_recall_is_not_published(tmp_path, small_factors, monkeypatch):
    storage = tmp_path / "s"
    first = publish_version(small_factors, storage, BuildOptions(n_trees=2, quality=False))
    real = publish.measure_quality

    def poor(*args, **kwargs):
        report = real(*args, **kwargs)
        bad = report.recommend.model_copy(update={"recall_at_k": 0.3})
        return report.model_copy(update={"recommend": bad})

    monkeypatch.setattr(publish, "measure_quality", poor)
    with pytest.raises(QualityTooLow, match=r"recommend: held-out recall@10 0.300"):
        publish_version(small_factors, storage, BuildOptions(n_trees=2, min_recall=0.8))
    assert read_latest(storage) == first.version
    assert list_versions(storage) == [first.version]


def test_filter_threshold_is_measured_with_fewer_users_than_filter_queries(
    tmp_path, small_factors, monkeypatch
):
    """40 users < FILTER_QUERIES: the filter plan measures the queries it has. Which strategy a
    small catalogue gets depends on timing, so the index strategy is forced here (CI once drew
    it and the filter plan indexed past the 40 user queries)."""
    from index_builder import quality

    monkeypatch.setattr(quality, "_wins", lambda point, target, brute_qps: True)
    manifest = publish_version(small_factors, tmp_path / "s", BuildOptions(n_trees=5))
    recommend = manifest.quality.recommend
    assert recommend.strategy == "ann"
    assert recommend.filter_curve  # measured, not skipped
    assert len(small_factors.user_factors) < quality.FILTER_QUERIES


def _plan(quality_module, served, ann, exact):
    return quality_module._with_filter_plan(
        "any", served, ann, exact, 4000, 100, 0.9, np.random.default_rng(0)
    )


@pytest.fixture
def clock(monkeypatch):
    """The quality module's perf_counter, moved only by the searches below: each takes exactly
    the time it says, so the pilot's verdict does not depend on the machine's load."""
    import types

    from index_builder import quality

    now = [100.0]
    monkeypatch.setattr(quality, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))

    def searching(calls, name, seconds):
        def run(q, keep):
            calls[name] += 1
            now[0] += seconds
            return np.arange(10)

        return run

    return searching


def test_a_filter_plan_clearly_slower_on_the_pilot_stops_there(tuned, clock):
    """The index path 10x slower than the exact one on the pilot: no more queries are spent on
    it, and the threshold is 1.0 (always exact)."""
    from index_builder import quality

    served = tuned[2].quality.similar_items.model_copy(update={"strategy": "ann"})
    calls = {"ann": 0, "exact": 0}
    ann, exact = clock(calls, "ann", 0.01), clock(calls, "exact", 0.001)
    result = _plan(quality, served, ann, exact)
    # The pilot's queries, and one untimed warm-up call per path.
    assert calls == {"ann": quality.FILTER_PILOT + 1, "exact": quality.FILTER_PILOT + 1}
    assert result.filter_threshold == 1.0 and len(result.filter_curve) == 1
    point = result.filter_curve[0]
    assert point.ann_queries_per_s == pytest.approx(100)
    assert point.exact_queries_per_s == pytest.approx(1000)
    assert point.ann_recall_at_k == 1.0  # same answers as the exact path


def test_a_filter_plan_that_wins_the_pilot_measures_every_query(tuned, clock):
    from index_builder import quality

    served = tuned[2].quality.recommend.model_copy(update={"strategy": "ann"})
    calls = {"ann": 0, "exact": 0}
    ann, exact = clock(calls, "ann", 0.0001), clock(calls, "exact", 0.0005)
    result = _plan(quality, served, ann, exact)
    assert len(result.filter_curve) >= 1
    # Every query, and an untimed warm-up call before the pilot and before the rest.
    assert calls["ann"] == calls["exact"] == (100 + 2) * len(result.filter_curve)
    for point in result.filter_curve:
        assert point.ann_queries_per_s == pytest.approx(10_000)
        assert point.exact_queries_per_s == pytest.approx(2_000)
    assert result.filter_threshold == result.filter_curve[-1].selectivity


def test_the_log_line_names_what_is_served_and_not_a_tuning_point_as_the_recall(tuned):
    """An exact strategy is served at recall 1 by a scan: the log says so, and gives the index's
    best tuning point under its own name (the progress bar's point_recall), never as `recall`."""
    report = tuned[2].quality
    exact = report.similar_items.model_copy(update={"strategy": "exact", "recall_at_k": 1.0})
    fields = publish._served_fields(exact)
    assert fields["strategy"] == "exact" and fields["served_recall"] == 1.0
    assert "search_k" not in fields and "recall" not in fields
    best = max(p.recall_at_k for p in exact.curve)
    assert fields["index_best_recall"] == round(best, 4)
    ann = report.recommend.model_copy(update={"strategy": "ann"})
    served = publish._served_fields(ann)
    assert served["search_k"] == ann.search_k and "index_best_recall" not in served


def test_the_table_is_measured_and_the_worker_serves_what_the_report_chose(tuned):
    """4,000 items: the exact graph. Its lookups are the exact answer; walks are measured at
    each k above the width, and the plan a worker loads names the same table and limits."""
    factors, storage, manifest = tuned
    table = manifest.quality.neighbour_table
    assert manifest.neighbour_table.method == "exact" and table.width == 32
    assert table.recall_at_k == 1.0 and table.serves
    # The exact graph's rows need no refining: the first point, 0 rounds, reached the target.
    assert table.refine == 0 and [p.rounds for p in table.refine_curve] == [0]
    walked = sorted({p.k for p in table.walk})
    assert walked and walked == [50, 100, 200][: len(walked)]
    passing = [p.k for p in table.walk if p.recall_at_k >= 0.9]
    assert table.walk_max_k <= max(passing, default=0)
    # Each k served by the first (smallest) beam that reached the target; larger beams of that
    # k were not tried, and the serving points run up to walk_max_k without a gap.
    serving = [p for p in table.walk if p.serves]
    assert [p.k for p in serving] == [k for k in walked if k <= table.walk_max_k]
    for p in serving:
        assert max(q.beam for q in table.walk if q.k == p.k) == p.beam
    v = load_version(storage, manifest.version)
    try:
        assert v.search.plan.similar.table and v.search.neighbours is not None
        assert v.search.plan.similar.walk_max_k == table.walk_max_k
        assert v.search.plan.similar.walk_beams == tuple((p.k, p.beam) for p in serving)
        unit = factors.item_factors / np.linalg.norm(factors.item_factors, axis=1)[:, None]
        for row in range(0, 4000, 400):
            rows, _ = v.search.similar_items(row, 11)
            # The item itself is its own best match, first of the exact top 12.
            assert recall_at_k(rows, exact_inner_product_top_k(unit, unit[row], 12)[1:]) == 1.0
    finally:
        v.close()


def test_refining_rounds_are_chosen_only_when_they_reach_the_aim():
    from index_builder.quality import _cheapest_reaching
    from schemas.manifest import RefinePoint

    def curve(*lows):
        return [
            RefinePoint(
                rounds=i, recall_at_k=low + 0.005, recall_low=low, queries_per_s=1000 / (i + 1)
            )
            for i, low in enumerate(lows)
        ]

    assert _cheapest_reaching(curve(0.95, 0.991, 0.995), 0.99, 0.95).rounds == 1
    # None reaches the aim: the fewest rounds that reach the target, not the slowest.
    assert _cheapest_reaching(curve(0.963, 0.964, 0.965), 0.99, 0.95).rounds == 0
    assert _cheapest_reaching(curve(0.90, 0.96, 0.97), 0.99, 0.95).rounds == 1
    assert _cheapest_reaching(curve(0.80, 0.85, 0.84), 0.99, 0.95).rounds == 1  # best recall
