"""`annrec build --resume` as a user runs it: a build stopped after its long phases (here by a
Ctrl-C in the neighbour table) is continued by the same command, without doing them again."""

import pytest

from index_builder import publish
from schemas.errors import AnnrecError
from schemas.layout import STAGING, read_latest
from tools.cli import build_parser


class Stopped(KeyboardInterrupt):
    """What a Ctrl-C (or the end of a session's shell) raises in the build."""


def _build(storage, *extra):
    """`annrec build ...` parsed and run as tools.cli.main does, but without its logging set-up
    (which caches every logger for the rest of the test session: other tests capture logs)."""
    small = ["--synth", "--items", "1500", "--users", "50", "--dim", "8", "--trees", "2"]
    words = ["build", *small, "--no-quality", "--no-announce", "--storage", str(storage), *extra]
    args = build_parser(words).parse_args(words)
    return args.handler(args)


def _stopped(storage, *extra):
    with pytest.raises(Stopped):
        _build(storage, *extra)


def _stop_in_the_table(monkeypatch):
    def stop(*args, **kwargs):
        raise Stopped

    monkeypatch.setattr(publish, "build_neighbour_table", stop)


def _must_not_run(*args, **kwargs):
    raise AssertionError("a finished phase ran again")


def test_a_stopped_build_is_continued_by_build_resume(tmp_path, monkeypatch):
    storage = tmp_path / "s"
    with monkeypatch.context() as m:
        _stop_in_the_table(m)
        _stopped(storage, "--resume")
    assert read_latest(storage) is None
    kept = sorted(p.name for p in (storage / STAGING).iterdir())
    assert len(kept) == 2 and kept[1] == kept[0] + ".resume"
    with monkeypatch.context() as m:
        m.setattr(publish, "build_annoy", _must_not_run)
        m.setattr(publish, "build_mips_bands", _must_not_run)
        assert _build(storage, "--resume") == 0
    assert read_latest(storage) is not None
    assert list((storage / STAGING).iterdir()) == []  # published, checkpoints removed


def test_without_resume_a_stop_keeps_nothing_and_other_options_start_over(tmp_path, monkeypatch):
    storage = tmp_path / "s"
    with monkeypatch.context() as m:
        _stop_in_the_table(m)
        _stopped(storage)
        assert list((storage / STAGING).iterdir()) == []  # a plain build cleans up after itself
        _stopped(storage, "--resume")
    # other options (4 trees instead of 2) change the indexes: nothing of the stopped build
    # is taken over, the angular index is built again, and the stopped build is left alone
    built = []
    real = publish.build_annoy

    def counted(*args, **kwargs):
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(publish, "build_annoy", counted)
    assert _build(storage, "--resume", "--trees", "4") == 0
    assert built and read_latest(storage) is not None
    assert len(list((storage / STAGING).iterdir())) == 2  # the stopped 2-tree build's


def test_resume_refuses_a_sharded_build_with_a_reason(tmp_path):
    with pytest.raises(AnnrecError, match=r"^--resume continues one version's build, not a shar"):
        _build(tmp_path / "s", "--resume", "--shards", "2")
