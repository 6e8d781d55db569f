"""The exactly-once sink's transaction steps, against a producer that records them."""

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from schemas.events import Reply
from worker.sinks import Fenced, SinkError, TransactionalKafkaSink


class _Producer:
    def __init__(self, fail_at: str | None = None, error: KafkaError | None = None) -> None:
        self.calls: list[str] = []
        self.fail_at, self.error = fail_at, error

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail_at:
            raise KafkaException(self.error)

    def begin_transaction(self):
        self._step("begin")

    def produce(self, topic, key=None, value=None, headers=None, on_delivery=None):
        self.calls.append(f"produce {topic}")

    def flush(self, timeout):
        return 0

    def send_offsets_to_transaction(self, offsets, metadata, timeout):
        self._step("offsets")

    def commit_transaction(self, timeout):
        failing, self.fail_at = self.fail_at == "commit", None  # a second commit succeeds
        self.calls.append("commit")
        if failing:
            raise KafkaException(self.error)

    def abort_transaction(self, timeout):
        self.calls.append("abort")


def _write(producer) -> None:
    sink = TransactionalKafkaSink(producer, "replies", "dead")
    reply = Reply(request_id="r1", status="ok", worker_id="w")
    sink.write_with_offsets([reply], [], [TopicPartition("requests", 0, 8)], object())


def test_replies_then_offsets_then_commit_in_one_transaction():
    p = _Producer()
    _write(p)
    assert p.calls == ["begin", "produce replies", "offsets", "commit"]


def test_a_refused_offset_commit_aborts_the_transaction():
    # A zombie: the group moved on (another generation), so its offsets are refused.
    p = _Producer("offsets", KafkaError(KafkaError.ILLEGAL_GENERATION, txn_requires_abort=True))
    with pytest.raises(SinkError):
        _write(p)
    assert p.calls[-1] == "abort" and "commit" not in p.calls


def test_a_retriable_commit_failure_commits_again():
    p = _Producer("commit", KafkaError(KafkaError._TIMED_OUT, retriable=True))
    _write(p)
    assert p.calls[-2:] == ["commit", "commit"]


def test_a_fenced_producer_stops_the_worker():
    p = _Producer("commit", KafkaError(KafkaError._FENCED, fatal=True))
    with pytest.raises(Fenced):
        _write(p)
    assert "abort" not in p.calls


def test_the_interactions_groups_offsets_go_in_the_same_transaction():
    p = _Producer()
    sent = []
    p.send_offsets_to_transaction = lambda offsets, metadata, timeout: sent.append(
        ([(tp.topic, tp.offset) for tp in offsets], metadata)
    )
    sink = TransactionalKafkaSink(p, "replies", "dead")
    requests_group, interactions_group = object(), object()
    sink.write_with_offsets(
        [],
        [],
        [TopicPartition("requests", 0, 8)],
        requests_group,
        [([TopicPartition("interactions", 2, 5)], interactions_group), ([], object())],
    )
    assert sent == [
        ([("requests", 8)], requests_group),
        ([("interactions", 5)], interactions_group),
    ]  # a group with nothing in the batch sends nothing
    assert p.calls == ["begin", "commit"]
