"""The CLI as a user meets it: exit codes and one-line errors (no services needed)."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.cli import annrec
from tools.cli import COMMANDS, build_parser

HEAVY = ("worker.app", "index_builder", "index_builder.publish", "numpy", "annoy", "matplotlib")


def _loaded_after(code: str) -> set[str]:
    """Modules of HEAVY loaded by `code` in a fresh interpreter (other tests' imports aside)."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return set(done.stdout.split())


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["stack", "up"], ["--log-level", "DEBUG", "stack", "status"], ["bench", "--help"]],
)
def test_parsing_a_light_command_loads_no_builder_worker_or_numpy(argv):
    code = f"import tools.cli\ntools.cli.build_parser({argv!r})"
    if "--help" not in argv:
        code += f".parse_args({argv!r})"
    assert _loaded_after(code) == set()


def test_the_chosen_command_alone_is_loaded():
    assert _loaded_after("import tools.cli\ntools.cli.build_parser(['worker'])") >= {"worker.app"}
    args = build_parser(["--log-level", "worker", "stack", "up"]).parse_args(
        ["--log-level", "worker", "stack", "up"]
    )  # an option's value that names a command is not the command
    assert args.command == "stack" and args.log_level == "worker"


def test_without_argv_every_command_is_registered_with_a_handler():
    parser = build_parser()
    for name in COMMANDS:
        sub = parser._subparsers._group_actions[0].choices[name]
        assert sub.get_default("handler") is not None or sub._subparsers is not None, name
    args = parser.parse_args(["request", "recommend", "--user-id", "u1"])
    assert args.k == 10 and callable(args.handler)


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"item_factors": np.array([[1.0, 2.0], [np.inf, 0.0]])}, "item_factors row 1"),
        (
            {"item_factors": np.ones((3, 2)), "item_ids": np.array(["a", "b", "a"])},
            "duplicate id 'a' at rows [0, 2]",
        ),
        ({"user_factors": np.ones((3, 2))}, "no 'item_factors'"),
    ],
)
def test_bad_factor_files_exit_1_with_one_line_naming_the_problem(tmp_path, arrays, expected):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    result = annrec(
        "build", "--factors", str(path), "--no-announce", "--storage", str(tmp_path / "s")
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("annrec: error: ") and expected in line
    assert not (tmp_path / "s" / "versions").exists()


def test_missing_file_and_bad_setting_are_one_line_errors(tmp_path):
    result = annrec("build", "--factors", str(tmp_path / "nope.npz"), "--no-announce")
    assert result.returncode == 1 and "does not exist" in result.stderr
    env = {"ANNREC_N_TREES": "zero", "PATH": "/usr/bin:/bin"}
    result = annrec("build", "--synth", "--no-announce", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "annrec: error: setting n_trees (ANNREC_N_TREES) must be a whole number (got 'zero')"
    )


def test_build_then_versions_list_and_rollback(tmp_path):
    storage = str(tmp_path / "s")
    common = ["--no-announce", "--storage", storage, "--no-quality", "--trees", "2"]
    first = annrec("build", "--synth", "--items", "200", "--users", "10", "--dim", "4", *common)
    second = annrec("build", "--synth", "--items", "200", "--users", "10", "--dim", "4", *common)
    assert first.returncode == second.returncode == 0, first.stderr
    v1, v2 = first.stdout.strip(), second.stdout.strip()
    listed = annrec("versions", "list", "--storage", storage).stdout.splitlines()
    assert [line.split()[-1] for line in listed] == [v1, v2] and listed[1].startswith("*")
    assert annrec("versions", "rollback", v1, "--storage", storage).returncode == 0
    assert (tmp_path / "s" / "LATEST").read_text().strip() == v1
    bad = annrec("versions", "rollback", "../../etc", "--storage", storage)
    assert bad.returncode == 1 and "no version" in bad.stderr


def test_rollback_refuses_a_damaged_version_with_the_reason(tmp_path):
    storage = str(tmp_path / "s")
    common = ["--no-announce", "--storage", storage, "--no-quality", "--trees", "2"]
    built = [
        annrec("build", "--synth", "--items", "200", "--users", "10", "--dim", "4", *common)
        for _ in range(3)
    ]
    v1, v2, v3 = (b.stdout.strip() for b in built)
    versions = tmp_path / "s" / "versions"
    altered = versions / v1 / "item_factors.npy"
    data = bytearray(altered.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    altered.write_bytes(bytes(data))
    (versions / v2 / "popularity.npy").write_bytes(b"short")

    for version, reason in [
        (v1, "item_factors.npy does not match its sha256"),
        (v2, "popularity.npy has 5 bytes"),
    ]:
        refused = annrec("versions", "rollback", version, "--storage", storage)
        assert refused.returncode == 1 and refused.stdout == ""
        assert refused.stderr.startswith(f"annrec: error: {version}: file ") and reason in (
            refused.stderr
        )
        assert (tmp_path / "s" / "LATEST").read_text().strip() == v3  # not moved


def test_build_from_interactions_trains_als_and_records_it(tmp_path):
    log = tmp_path / "log.parquet"
    assert (
        annrec(
            "synth", "--users", "300", "--items", "400", "--per-user", "20", "--out", str(log)
        ).returncode
        == 0
    )
    storage = tmp_path / "s"
    result = annrec(
        "build",
        "--interactions",
        str(log),
        "--als-factors",
        "8",
        "--als-iterations",
        "3",
        "--no-announce",
        "--storage",
        str(storage),
        "--trees",
        "4",
    )
    assert result.returncode == 0, result.stderr
    from schemas.layout import version_dir
    from schemas.manifest import Manifest

    version = result.stdout.strip()
    manifest = Manifest.model_validate_json(
        (version_dir(storage, version) / "manifest.json").read_text()
    )
    assert manifest.dim == 8 and manifest.training is not None
    assert manifest.training.factors == 8 and manifest.training.iterations == 3
    assert manifest.build.source == str(log) and manifest.quality is not None


def test_a_missing_input_file_is_a_one_line_error(tmp_path):
    result = annrec("bench", "summary", str(tmp_path / "nope.json"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"annrec: error: No such file or directory: {tmp_path / 'nope.json'}"
    ]


# The --quick values CI has always run (they were inline in tools/cli.py before each benchmark
# registered its own): a change here changes what CI measures.
QUICK = {
    "build": {"items": 5_000, "users": 500, "dim": 16, "trees": 5, "mips_trees": 5, "queries": 50},
    "ann": {"items": 3_000, "datasets": "synth", "queries": 100, "timed_queries": 30},
    "filters": {"items": 20_000, "users": 2_000, "dim": 16, "queries": 30},
    "e2e": {"rates": "50,100", "duration": 2.0, "items": 5_000, "warmup": 0.5},
    "load": {"items": 20_000, "loads": 1},
}


@pytest.mark.parametrize("kind", sorted(QUICK))
def test_each_benchmark_applies_its_own_quick_profile_over_the_flags(kind):
    from tools.bench.cli import apply_quick

    argv = ["bench", kind, "--out", "x", "--items", "7"]
    plain = build_parser(argv).parse_args(argv)
    assert plain.items == 7 and apply_quick(plain).items == 7  # no --quick: flags as given
    quick = apply_quick(build_parser([*argv, "--quick"]).parse_args([*argv, "--quick"]))
    for name, value in QUICK[kind].items():
        assert getattr(quick, name) == value, name
    assert quick.quick_profile == QUICK[kind]


def test_a_build_off_a_terminal_writes_log_lines_only_and_publishes_without_kafka(tmp_path):
    """stdout and stderr piped (as in a log file): no progress bar, no escape sequence, every
    stderr line in the project's key=value format; no Kafka anywhere: published, with a warning
    that workers pick the version up by polling."""
    env = {**os.environ, "ANNREC_STACK_DIR": str(tmp_path / "no-stack")}
    env.pop("ANNREC_KAFKA_BOOTSTRAP", None)
    env.pop("ANNREC_PROGRESS", None)
    build = ["build", "--synth", "--items", "3000", "--users", "300", "--dim", "8", "--trees", "4"]
    result = annrec(*build, "--storage", str(tmp_path / "s"), env=env)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout + result.stderr and "point/s" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines and all(re.match(r"ts='[^']+' level='\w+' event='\w+'", line) for line in lines)
    assert any("event='version_not_announced'" in line for line in lines)
    assert (tmp_path / "s" / "LATEST").read_text().strip() == result.stdout.strip()

    forced = annrec("--progress", *build, "--storage", str(tmp_path / "s2"), env=env)
    assert forced.returncode == 0 and "quality recommend:" in forced.stderr  # asked for


def test_announcing_can_be_required(tmp_path):
    env = {**os.environ, "ANNREC_STACK_DIR": str(tmp_path / "no-stack")}
    env.pop("ANNREC_KAFKA_BOOTSTRAP", None)
    args = ["build", "--synth", "--items", "300", "--dim", "4", "--no-quality", "--announce"]
    result = annrec(*args, "--storage", str(tmp_path / "s"), env=env)
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        "no Kafka: set ANNREC_KAFKA_BOOTSTRAP or start one with `annrec stack up`"
    )
    assert not (tmp_path / "s" / "LATEST").exists()
