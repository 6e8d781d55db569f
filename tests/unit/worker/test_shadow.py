import dataclasses

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from query_engine.vectors import exact_cosine_top_k, recall_at_k
from schemas.events import RecommendRequest, SimilarItemsRequest
from schemas.manifest import IndexQuality, QualityReport
from worker.answer import answer
from worker.shadow import ShadowSampler


def _similar_requests(n):
    # search_k=2: the angular index sees almost nothing, so many answers are wrong
    return [
        SimilarItemsRequest(request_id=f"s{i}", item_id=f"i{i}", k=10, search_k=2) for i in range(n)
    ]


def test_live_recall_equals_recall_computed_independently(version, small_factors):
    sampler = ShadowSampler(CollectorRegistry(), fraction=1.0, window=1000, seed=1).start()
    items = small_factors.item_factors
    norms = np.linalg.norm(items, axis=1).astype(np.float32)
    independent = []
    for request in _similar_requests(60):
        reply = answer(request, version, "w")
        sampler.offer(request, reply, version)
        row = int(request.item_id[1:])
        truth = exact_cosine_top_k(items, norms, items[row], 10, exclude=row)
        independent.append(recall_at_k([int(i.item_id[1:]) for i in reply.items], truth))
    assert sampler.wait_idle()
    mean, n = sampler.recall("similar_items", version.version)
    assert n == 60
    assert mean == pytest.approx(np.mean(independent), abs=1e-12)
    assert mean < 1.0  # the budget was too small: the sampler must see it
    sampler.stop()


def test_exact_answers_have_recall_one(version):
    sampler = ShadowSampler(CollectorRegistry(), fraction=1.0, seed=1).start()
    for u in range(20):
        request = RecommendRequest(request_id=f"r{u}", user_id=f"u{u}", k=10)
        sampler.offer(request, answer(request, version, "w"), version)
    assert sampler.wait_idle()
    assert sampler.recall("recommend", version.version) == (1.0, 20)
    sampler.stop()


def test_a_full_queue_drops_samples_and_never_blocks(version):
    registry = CollectorRegistry()
    sampler = ShadowSampler(registry, fraction=1.0, queue_size=2)  # not started: nothing drains
    for request in _similar_requests(5):
        sampler.offer(request, answer(request, version, "w"), version)
    assert registry.get_sample_value("annrec_shadow_dropped_total") == 3


def test_the_fraction_is_honoured(version):
    sampler = ShadowSampler(CollectorRegistry(), fraction=0.1, queue_size=10_000, seed=3)
    requests = _similar_requests(1) * 2000
    reply = answer(requests[0], version, "w")
    for request in requests:
        sampler.offer(request, reply, version)
    assert 120 <= sampler._queue.qsize() <= 280  # ~200 of 2000


def test_a_window_below_the_target_raises_the_metric(version):
    registry = CollectorRegistry()
    served = IndexQuality.model_construct(strategy="ann", search_k=-1)
    target = QualityReport.model_construct(k=10, target_recall=0.99, similar_items=served)
    strict = dataclasses.replace(
        version, manifest=version.manifest.model_copy(update={"quality": target})
    )
    sampler = ShadowSampler(registry, fraction=1.0, window=10, seed=1).start()
    for request in _similar_requests(30):
        sampler.offer(request, answer(request, strict, "w"), strict)
    assert sampler.wait_idle()
    assert (
        registry.get_sample_value("annrec_live_recall_below_target", {"kind": "similar_items"}) == 1
    )
    sampler.stop()


class _Clock:
    """A clock that moves only when told: the sampler's pauses are then exact."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


def test_the_checks_keep_to_their_share_of_a_core(version):
    """Each check buys a pause of t * (1 / share - 1) (here 99 t): the samples offered during
    it are skipped, and counted; once it is over, samples are taken again."""
    registry = CollectorRegistry()
    clock = _Clock()

    def a_check_takes_a_second(*_):  # `publish` runs inside the check: t = 1 s
        clock.advance(1.0)

    sampler = ShadowSampler(
        registry,
        fraction=1.0,
        seed=1,
        cpu_share=0.01,
        publish=a_check_takes_a_second,
        clock=clock,
    ).start()
    request = RecommendRequest(request_id="r", user_id="u1", k=10)
    reply = answer(request, version, "w")
    sampler.offer(request, reply, version)
    assert sampler.wait_idle()  # the check ended at 1001: no sample before 1001 + 99
    for _ in range(50):
        sampler.offer(request, reply, version)
    clock.advance(98.0)  # 1099: still paused
    sampler.offer(request, reply, version)
    assert sampler.wait_idle()
    assert registry.get_sample_value("annrec_shadow_samples_total", {"kind": "recommend"}) == 1
    assert registry.get_sample_value("annrec_shadow_skipped_total") == 51
    clock.advance(1.0)  # 1100: the pause is over
    sampler.offer(request, reply, version)
    assert sampler.wait_idle()
    assert registry.get_sample_value("annrec_shadow_samples_total", {"kind": "recommend"}) == 2
    assert registry.get_sample_value("annrec_shadow_skipped_total") == 51
    sampler.stop()


def test_the_share_must_be_a_fraction_of_a_core():
    with pytest.raises(ValueError, match="cpu_share"):
        ShadowSampler(CollectorRegistry(), cpu_share=0)
