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


def test_exactly_once_turns_on_transactions_and_off_the_consumers_commits():
    from worker.consumer import producer_config

    s = WorkerSettings(
        processing_guarantee="exactly-once", group_id="g", worker_id="w1", instance_id=None
    )
    kafka = {"bootstrap.servers": "k:9092"}
    conf = consumer_config(s, kafka)
    assert conf["enable.auto.commit"] is False and conf["isolation.level"] == "read_committed"
    prod = producer_config(s, kafka)
    assert prod["transactional.id"] == "annrec-g-w1" and prod["enable.idempotence"] is True
    assert prod["transaction.timeout.ms"] == 10_000
    stable = s.model_copy(update={"instance_id": "pod-3"})
    assert producer_config(stable, kafka)["transactional.id"] == "annrec-g-pod-3"
    plain = producer_config(WorkerSettings(), kafka)
    assert (
        "transactional.id" not in plain
        and consumer_config(WorkerSettings(), kafka)["enable.auto.commit"]
    )
