import subprocess
import sys
import time

from tools import processes

IGNORES_SIGTERM = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)


def test_stop_terminates_then_kills_what_outlives_the_timeout():
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stubborn = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE)
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
    started = time.monotonic()
    processes.stop([polite, stubborn], timeout_s=1.0)
    assert polite.returncode == -15 and stubborn.returncode == -9
    assert time.monotonic() - started < 30
    processes.stop([polite])  # already exited: nothing to do
