"""The test harness leaves no process behind, even when the test run itself is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO

# A stand-in for a test session: spawn a long-lived group through conftest, report its pid, wait.
SESSION = """
import sys, time
sys.path.insert(0, {tests!r})
import conftest
child = conftest.spawn_process_group([sys.executable, "-c", "import time; time.sleep(300)"])
print(child.pid, flush=True)
if {sigterm_handler}:
    conftest.pytest_configure(None)
time.sleep(300)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux")
@pytest.mark.parametrize("kill_with, sigterm_handler", [(signal.SIGKILL, False), (signal.SIGTERM, True)],
                         ids=["sigkill-parent-death-signal", "sigterm-atexit"])
def test_a_killed_session_leaves_no_spawned_group(kill_with, sigterm_handler):
    code = SESSION.format(tests=str(REPO / "tests"), sigterm_handler=sigterm_handler)
    session = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(session.stdout.readline())
    assert alive(child)
    session.send_signal(kill_with)
    session.wait(timeout=30)
    try:
        assert gone_within(child, 10), f"spawned process {child} outlived its killed session"
    finally:
        if alive(child):
            os.killpg(child, signal.SIGKILL)
