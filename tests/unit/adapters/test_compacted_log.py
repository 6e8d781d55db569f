"""Reading a compacted topic's end offsets: a partition without a leader yet is retried until
the deadline, anything else is refused at once."""

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from adapters import compacted_log
from adapters.compacted_log import end_offset
from schemas.errors import AnnrecError


class Watermarks:
    """A consumer's get_watermark_offsets that fails with `errors` first, then answers."""

    def __init__(self, errors: list[int], high: int = 42) -> None:
        self.errors = list(errors)
        self.high = high
        self.calls = 0

    def get_watermark_offsets(self, partition, timeout, cached):
        self.calls += 1
        assert cached is False and timeout > 0
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return 0, self.high


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    monkeypatch.setattr(compacted_log, "RETRY_PAUSE_S", 0.0)


def test_a_partition_without_a_leader_yet_is_retried():
    consumer = Watermarks([KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE])
    assert end_offset(consumer, TopicPartition("t", 0), time.monotonic() + 5) == 42
    assert consumer.calls == 3


def test_other_errors_and_the_deadline_are_refused_with_the_reason():
    consumer = Watermarks([KafkaError.TOPIC_AUTHORIZATION_FAILED])
    with pytest.raises(AnnrecError, match=r"t\[0\]: end offset not read"):
        end_offset(consumer, TopicPartition("t", 0), time.monotonic() + 5)
    assert consumer.calls == 1
    leaderless = Watermarks([KafkaError.NOT_LEADER_FOR_PARTITION] * 1000)
    with pytest.raises(AnnrecError, match="NOT_LEADER"):
        end_offset(leaderless, TopicPartition("t", 0), time.monotonic() - 1)
    assert leaderless.calls == 1
