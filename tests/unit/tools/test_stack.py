import subprocess
import time
from pathlib import Path

from tools.stack import Spawned, _proc_stat, _stop


def _spawned(cmd):
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    stat = _proc_stat(proc.pid)
    assert stat is not None
    return proc.pid, Spawned(proc.pid, int(stat[19]))


def test_a_stopped_child_leaves_no_defunct_entry():
    pid, spawned = _spawned(["sleep", "60"])
    assert _stop(spawned, grace_s=5)
    assert not Path(f"/proc/{pid}").exists()  # reaped, not a zombie


def test_a_child_that_died_on_its_own_is_reaped_too():
    pid, spawned = _spawned(["true"])
    deadline = time.monotonic() + 10
    while (_proc_stat(pid) or ["Z"])[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)  # until it has exited: a zombie of ours
    assert not _stop(spawned)
    assert not Path(f"/proc/{pid}").exists()
