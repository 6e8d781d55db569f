import pytest

from adapters.topics import ensure_topics
from schemas.errors import AnnrecError


def test_an_unreachable_kafka_is_one_line_naming_the_setting():
    with pytest.raises(AnnrecError) as refused:
        ensure_topics({"bootstrap.servers": "127.0.0.1:1"}, [], timeout_s=3)
    line = str(refused.value)
    assert line.startswith("Kafka at 127.0.0.1:1 is not reachable (")
    assert line.endswith("check ANNREC_KAFKA_BOOTSTRAP or start one with `annrec stack up`")
    assert "\n" not in line
