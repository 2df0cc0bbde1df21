"""Tests of the load benchmark (bench/) and its baseline servers."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time

import pytest

BASELINES = ["threaded_server", "asyncio_server"]


def start_module(module: str, *args: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    match = re.search(r"Server listening on 127\.0\.0\.1:(\d+)", line)
    assert match, line
    return proc, int(match.group(1))


def recv_lines(sock: socket.socket, count: int, timeout: float = 5.0) -> list[bytes]:
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while data.count(b"\n") < count and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n")[:count]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", BASELINES)
def test_baseline_relays_seed_format_and_stops_on_sigterm(name):
    proc, port = start_module(f"bench.baselines.{name}")
    try:
        a = socket.create_connection(("127.0.0.1", port))
        b = socket.create_connection(("127.0.0.1", port))
        assert recv_lines(a, 1)[0].startswith(b"*** Welcome, ")
        assert recv_lines(b, 1)[0].startswith(b"*** Welcome, ")
        a.sendall(b"hello\r\nworld\n")
        a_port = a.getsockname()[1]
        assert recv_lines(b, 2) == [f"{a_port}: hello".encode(), f"{a_port}: world".encode()]
        a.sendall(b"exit\n")
        a.settimeout(5)
        assert a.recv(100) == b""
        a.close()
        b.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Server stopped" in out
