"""tools.bench.cli's shared flags, as the bench commands that use them parse them."""

from pathlib import Path

import pytest

from schemas.layout import version_dir
from tools.bench.cli import kept_storage, kept_version
from tools.cli import build_parser

V1, V2, V3 = (f"20261202T01104{i}.000000Z-8e33bc" for i in range(3))  # version names

# The commands that build their own catalogue and can keep it (`--storage`, `--build-only`).
KEEPING = [["bench", "e2e"], ["bench", "e2e", "--via", "gateway"], ["bench", "freshness"]]


def _parse(command, *flags):
    argv = [*command, "--out", "o", *flags]
    return build_parser(argv).parse_args(argv)


@pytest.mark.parametrize("command", KEEPING)
def test_build_only_keeps_the_version_in_storage_or_else_under_out(command):
    assert kept_storage(_parse(command, "--build-only", "--storage", "s")) == Path("s")
    assert kept_storage(_parse(command, "--build-only")) == Path("o") / "storage"
    assert kept_storage(_parse(command, "--storage", "s")) == Path("s")
    assert kept_storage(_parse(command)) is None  # a temporary folder of the run's


def _help(command, flag):
    """The help string `flag` was registered with (argparse has no public way to it: the
    formatted --help wraps it at the terminal's width)."""
    parser = build_parser([*command, "--out", "o"])
    for word in command[:2]:
        parser = parser._subparsers._group_actions[0].choices[word]
    return next(a.help for a in parser._actions if flag in a.option_strings)


@pytest.mark.parametrize("flag", ["--storage", "--build-only"])
def test_the_commands_say_the_same_of_the_flags(flag):
    e2e, gateway, freshness = (_help(command, flag) for command in KEEPING)
    assert e2e == gateway == freshness  # both modes of bench e2e read them


def test_a_kept_version_is_built_once_per_catalogue(tmp_path):
    built = []

    def publish(name):
        def run():
            built.append(name)
            version_dir(tmp_path, name).mkdir(parents=True)
            (tmp_path / "LATEST").write_text(name + "\n")

        return run

    one = {"items": 100, "seed": 1}
    assert kept_version(tmp_path, one, publish(V1)) == V1
    assert kept_version(tmp_path, dict(one), publish(V2)) == V1  # found again: not rebuilt
    assert kept_version(tmp_path, {**one, "attributes": 1}, publish(V3)) == V3
    assert built == [V1, V3]


def test_a_kept_catalogue_whose_version_folder_is_gone_is_built_again(tmp_path):
    def publish(name):
        def run():
            version_dir(tmp_path, name).mkdir(parents=True)
            (tmp_path / "LATEST").write_text(name + "\n")

        return run

    one = {"items": 100, "seed": 1}
    kept_version(tmp_path, one, publish(V1))
    version_dir(
        tmp_path, V1
    ).rmdir()  # what a cleaned /tmp left: LATEST and the catalogue, no version
    assert kept_version(tmp_path, one, publish(V2)) == V2
