from worker.metrics import HealthState
from worker.progress import PartitionProgress


def test_lag_is_end_minus_position():
    p = PartitionProgress(stall_after_s=30)
    assert p.update(0, position=10, end=25, now=0) == 15
    assert p.update(1, position=7, end=7, now=0) == 0
    assert p.lag == {0: 15, 1: 0}


def test_a_partition_with_waiting_requests_that_does_not_move_is_stalled():
    p = PartitionProgress(stall_after_s=30)
    p.update(0, 10, 25, now=0)  # requests waiting
    p.update(1, 7, 7, now=0)  # nothing waiting: idle, not stalled
    p.update(2, 5, 9, now=0)
    p.update(2, 9, 12, now=20)  # moving: fine
    assert p.stalled(now=29) == []
    p.update(0, 10, 30, now=40)
    p.update(1, 7, 7, now=40)
    p.update(2, 12, 14, now=40)
    assert p.stalled(now=40) == [0]
    p.forget(0)  # revoked
    assert p.stalled(now=40) == []


def test_health_fails_while_a_partition_is_stalled():
    health = HealthState(max_poll_gap_s=30)
    health.version = "v"
    health.polled()
    assert health.report()[0]
    health.stalled = [3]
    ok, doc = health.report()
    assert not ok and doc["stalled_partitions"] == [3]
