"""The personalization benchmark's replay: targets are first meetings predicted from what was
known before them, nothing of the future leaks; the drifting log is seeded and time-ordered."""

import numpy as np

from index_builder.train import Events
from tools.bench.drift import DriftParams, drifting_log
from tools.bench.stream_eval import stream_targets, time_split


def _events(rows):
    users, items, ts = (np.asarray(c) for c in zip(*rows, strict=True))
    return Events(users.astype(np.int64), items.astype(np.int64), np.ones(len(rows)), ts * 1.0)


def test_targets_are_first_meetings_with_only_the_past_and_earlier_stream_known():
    events = _events(
        [
            (0, 1, 1), (0, 2, 2), (1, 3, 3), (1, 4, 4),  # the past (t < 5)
            (0, 2, 6),  # met before: not a target
            (0, 5, 7),  # a target: history [2 at t=6]
            (0, 5, 8),  # met in the stream already: not a target
            (2, 6, 9),  # a user without a past: not a target
            (1, 7, 10),  # a target: no stream history yet
        ]
    )  # fmt: skip
    split = time_split(events.timestamps, fraction=5 / 9)
    assert split.cutoff == 6 and split.train_rows.sum() == 4
    targets, total = stream_targets(events, split, max_targets=10, seed=0)
    assert total == 2
    first, second = targets
    assert (first.user, first.item, first.at) == (0, 5, 7.0)
    assert [e.item_id for e in first.history] == ["2"] and first.seen == (1, 2)
    assert (second.user, second.item, second.history, second.seen) == (1, 7, (), (3, 4))


def test_the_drifting_log_is_seeded_and_each_user_in_time_order():
    p = DriftParams(users=50, items=200, events_per_user=20, clusters=8)
    a, b = drifting_log(p, seed=3), drifting_log(p, seed=3)
    np.testing.assert_array_equal(a.items, b.items)
    assert not np.array_equal(a.items, drifting_log(p, seed=4).items)
    per_user = a.timestamps.reshape(50, 20)
    assert (np.diff(per_user, axis=1) >= 0).all() and a.items.max() < 200
