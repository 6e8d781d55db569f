"""tools.bench.results.write_results: the end every bench command shares."""

import json
import sys

import pytest

from tools.bench.results import write_results


def test_the_command_and_machine_are_the_last_keys_and_written_before_the_plot(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(sys, "argv", ["annrec", "bench", "e2e", "--quick", "--out", "x"])
    seen = []

    def plot(results, path):
        # the JSON is on disk, with the command and the machine, before anything is drawn
        seen.append(("plot", json.loads((tmp_path / "r.json").read_text()), path))

    results = write_results(
        tmp_path,
        {"runs": {"echo": [1]}, "params": {"rates": [50]}},
        "r.json",
        "r.png",
        plot,
        lambda r: seen.append(("show", r, None)),
    )
    assert list(results) == ["runs", "params", "command", "machine"]
    assert results["command"] == "annrec bench e2e --quick --out x"
    assert results["machine"]["cores"] > 0
    on_disk = json.loads((tmp_path / "r.json").read_text())
    assert list(on_disk) == list(results) and on_disk["runs"] == {"echo": [1]}
    assert [step for step, *_ in seen] == ["plot", "show"]
    assert seen[0][1] == on_disk and seen[0][2] == tmp_path / "r.png"
    assert seen[1][1] is results


def test_a_failing_plot_leaves_the_figures_on_disk(tmp_path):
    def plot(results, path):
        raise RuntimeError("no display")

    with pytest.raises(RuntimeError):
        write_results(tmp_path, {"points": [3]}, "r.json", "r.png", plot, print)
    assert json.loads((tmp_path / "r.json").read_text())["points"] == [3]
