"""A signal sent as soon as the server has printed its listening line must still lead to
a clean stop (contract section 2: scripts wait for that line, then may stop the server).

Kept apart from test_server_cli.py while the server installs its SIGINT/SIGTERM handlers
only after printing ``Server listening on``: a SIGINT in that window ends the process with
a KeyboardInterrupt traceback and status -SIGINT instead of ``Server stopped`` and 0.
"""

from __future__ import annotations

import signal

import pytest
from conftest import ServerProcess

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_right_after_the_listening_line(signum):
    failures = []
    for attempt in range(25):
        server = ServerProcess()
        try:
            server.signal(signum)
            rc = server.wait(timeout=10)
            console = server.stdout_lines()
            stopped = bool(console) and console[-1].endswith("Server stopped")
            if rc != 0 or not stopped or server.stderr_lines():
                failures.append((attempt, rc, console[-2:], server.stderr_lines()[-2:]))
        finally:
            server.kill()
    assert not failures, f"{len(failures)} of 25 starts did not stop cleanly: {failures[:3]}"
