"""The worker's consumer settings: failover defaults, and the group protocol's own rules."""

from worker.consumer import CLASSIC_ONLY, consumer_config
from worker.settings import WorkerSettings


def test_failover_defaults_evict_a_silent_worker_in_seconds():
    conf = consumer_config(WorkerSettings(), {"bootstrap.servers": "k:9092"})
    assert conf["session.timeout.ms"] == 6000  # the broker's default group.min.session.timeout
    assert conf["heartbeat.interval.ms"] * 3 <= conf["session.timeout.ms"]
    assert conf["partition.assignment.strategy"] == "cooperative-sticky"


def test_the_consumer_group_protocol_leaves_timeouts_and_assignment_to_the_broker():
    s = WorkerSettings(consumer_config={"group.protocol": "consumer"})
    conf = consumer_config(s, {"bootstrap.servers": "k:9092"})
    assert conf["group.protocol"] == "consumer"
    assert not set(CLASSIC_ONLY) & set(conf)
