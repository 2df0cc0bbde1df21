"""A real redis-server for the cluster tests: started on a free port, stopped by its PID.

Without redis-server (or the redis package) the cluster tests are skipped, so the rest of
the suite needs neither; CI sets GEVENTCHAT_REQUIRE_REDIS=1 and then a missing Redis fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest
from conftest import _die_with_parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _missing(reason: str) -> None:
    if os.environ.get("GEVENTCHAT_REQUIRE_REDIS"):
        pytest.fail(f"{reason} (GEVENTCHAT_REQUIRE_REDIS is set)")
    pytest.skip(reason)


class RedisServer:
    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--save", "", "--appendonly", "no", "--port", str(self.port), "--bind", "127.0.0.1"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.command("PING") == b"+PONG\r\n":
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def command(self, *words: str) -> bytes:
        """One inline command; its raw reply (enough for PING and small replies)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(" ".join(words).encode() + b"\r\n")
            return sock.recv(65536)

    def stop(self) -> None:
        """Kill it (SIGKILL, as a crash): the link must notice by itself."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


@pytest.fixture
def redis_server():
    try:
        import redis  # noqa: F401  (the server needs it)
    except ImportError:
        _missing("the redis package is not installed")
    binary = shutil.which("redis-server")
    if binary is None:
        _missing("redis-server is not installed")
    server = RedisServer(binary)
    server.start()
    yield server
    server.stop()
