"""The overload scenario's schedule and recovery measure, on known inputs."""

from tools.chaos.overload import _phases, _recovery_s


def test_phases_send_at_each_rate_in_turn():
    times = _phases([(2, 1.0), (4, 1.0)])
    assert times == [0.0, 0.5, 1.0, 1.25, 1.5, 1.75]


def test_recovery_is_the_first_second_from_which_delays_stay_steady():
    ended = 30.0
    after = [(30.2, 2.0, "expired"), (31.5, 0.5, "ok"), (32.1, 0.02, "ok"), (33.4, 0.03, "ok")]
    assert _recovery_s(after, ended, steady_p99=0.02) == 2.0
    assert _recovery_s([(30.5, 1.0, "ok")], ended, steady_p99=0.02) is None
    assert _recovery_s([], ended, steady_p99=0.02) is None
