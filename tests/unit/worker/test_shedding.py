from worker.app import Worker
from worker.settings import WorkerSettings
from worker.shedding import OverloadDetector


def test_shedding_starts_only_when_every_batch_stays_behind_for_the_window():
    d = OverloadDetector(target_s=1.0, after_s=3.0)
    assert not d.observe(5.0, now=100.0)  # a failover's backlog: behind, but not for long
    assert not d.observe(4.0, now=102.0)
    assert not d.observe(0.01, now=102.5)  # drained: the window starts over
    assert not d.observe(2.0, now=103.0)
    assert not d.observe(2.0, now=105.9)
    assert d.observe(2.0, now=106.0)  # behind for 3 s in a row: sustained overload
    assert d.observe(1.5, now=110.0)


def test_shedding_stops_as_soon_as_a_batch_is_fresh_or_nothing_waits():
    d = OverloadDetector(target_s=1.0, after_s=1.0)
    d.observe(3.0, now=0.0)
    assert d.observe(3.0, now=2.0)
    assert not d.observe(0.2, now=2.5)
    d.observe(3.0, now=3.0)
    assert d.observe(3.0, now=4.0)
    assert not d.observe(None, now=4.5)  # an empty poll


def test_a_zero_wait_never_sheds():
    d = OverloadDetector(target_s=0.0, after_s=1.0)
    assert not any(d.observe(100.0, now=t) for t in range(10))


def test_while_shedding_requests_without_a_deadline_expire_past_the_shed_wait():
    worker = Worker(WorkerSettings(shed_wait_ms=800, default_deadline_ms=10_000), {}, "redis://x")
    assert worker._policy().default_deadline_ms == 10_000
    assert worker._policy(shed=True).default_deadline_ms == 800
    none = Worker(WorkerSettings(shed_wait_ms=0, default_deadline_ms=10_000), {}, "redis://x")
    assert none._policy(shed=True).default_deadline_ms == 10_000
