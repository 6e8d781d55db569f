"""The worker's pure core against the hostile payloads `annrec chaos fuzz` sends through Kafka."""

from collections import Counter

from schemas.events import DEAD_LETTER_PAYLOAD_BYTES, DeadLetter
from tools.chaos.fuzz import MAKERS, hostile_payloads, valid_payload
from worker.answer import answer_batch
from worker.parse import RawEvent, parse_batch


def test_every_hostile_event_is_dead_lettered_and_valid_ones_answered(version):
    hostile = hostile_payloads(seed=7, n=1500)
    assert set(MAKERS) == {category for category, _, _ in hostile}  # every kind was generated
    events, valid_ids = [], set()
    for i, (_, _, payload) in enumerate(hostile):
        events.append(RawEvent("req", 0, 2 * i, None, payload))
        rid = f"valid-{i}"
        valid_ids.add(rid)
        events.append(RawEvent("req", 0, 2 * i + 1, rid.encode(), valid_payload(rid, 40, i)))
    outcome = answer_batch(parse_batch(events), version, "w")

    dead = {d.source_offset: d for d in outcome.dead_letters}
    assert sorted(dead) == [2 * i for i in range(len(hostile))]  # every hostile one, only them
    for d in dead.values():
        assert d.reason and "internal error" not in d.reason
        assert d.payload_bytes == len(hostile[d.source_offset // 2][2])
        # A dead letter must itself fit in a Kafka message.
        assert len(d.payload()) <= DEAD_LETTER_PAYLOAD_BYTES
        assert len(d.model_dump_json()) < 200_000
    ok = {r.request_id for r in outcome.replies if r.status == "ok"}
    assert valid_ids <= ok
    # Hostile events whose request_id is readable get an error reply, so no caller waits forever.
    errors = Counter(r.status for r in outcome.replies if r.request_id not in valid_ids)
    assert set(errors) <= {"error"}
    # Every one with a top-level request_id, deep nesting included (issue 21).
    unreadable = {"random_bytes", "not_json", "oversized"}
    readable = {rid for category, rid, _ in hostile if category not in unreadable}
    assert readable <= {r.request_id for r in outcome.replies if r.status == "error"}


def test_an_oversized_payload_is_refused_before_parsing(version):
    (_, _, payload), *_ = [h for h in hostile_payloads(3, 400) if h[0] == "oversized"]
    (parsed,) = parse_batch([RawEvent("req", 0, 0, None, payload)])
    assert parsed.request is None and "exceeds" in (parsed.reason or "")


def test_a_vector_that_overflows_float32_is_refused(version):
    events = [
        RawEvent(
            "req",
            0,
            0,
            None,
            b'{"request_id": "r", "kind": "recommend", "user_vector": [1e39, 1, 1, 1, 1, 1, 1, 1]}',
        )
    ]
    outcome = answer_batch(parse_batch(events), version, "w")
    assert [d.source_offset for d in outcome.dead_letters] == [0]
    assert "user_vector.0 must be at most" in outcome.dead_letters[0].reason
    assert isinstance(outcome.dead_letters[0], DeadLetter)
