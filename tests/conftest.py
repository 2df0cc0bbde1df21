"""Shared fixtures for the end-to-end tests: a real server process and line clients.

The server runs as ``python -m geventchat.server --host 127.0.0.1 --port 0 ...`` in a
subprocess; the fixture reads the port from its ``Server listening on`` line and always
ends the process by its PID. ``ChatClient`` is a small blocking line client with
timeouts. Every wait in here is bounded in time.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

# Seconds a test waits for something that should happen "at once" on localhost.
WAIT = 5.0

LISTENING_RE = re.compile(r"Server listening on 127\.0\.0\.1:(\d+)$")
WELCOME_RE = re.compile(r"^\*\*\* Welcome, (\S+)! You are in (\S+)\. Type /help for commands\.$")
NICK_RE = re.compile(r"^[A-Za-z0-9_\-\[\]{}|^]{1,32}$")


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGKILL the server if the test process dies first, so
    that an interrupted run leaves no server behind (teardown kills it otherwise)."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:
        pass


def server_command(*args: str) -> list[str]:
    return [sys.executable, "-u", "-m", "geventchat.server", *args]


def run_server_command(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
    """Run the server command to completion (for flags that make it exit at once)."""
    return subprocess.run(
        server_command(*args),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def console_text(line: str, text: str) -> bool:
    """True if a console line is ``text``, optionally after a timestamp or level prefix."""
    return line == text or line.endswith(" " + text)


# ---------------------------------------------------------------------- the server


class ServerProcess:
    """A running server subprocess whose stdout and stderr are collected by threads."""

    def __init__(self, *args: str, start_timeout: float = 10.0) -> None:
        self.args = args
        if not any(arg.startswith("--history") for arg in args):
            # Tests of other features expect a room to be silent on entering it; those of
            # history (tests/test_history*.py) pass --history or --history-on-join.
            args = ("--history-on-join", "0", *args)
        self.proc = subprocess.Popen(
            server_command("--host", HOST, "--port", "0", *args),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self.pid = self.proc.pid
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._cond = threading.Condition()
        self._eof = {"stdout": False, "stderr": False}
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self._stdout, "stdout"), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self._stderr, "stderr"), daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        try:
            line = self.wait_for(lambda l: LISTENING_RE.search(l) is not None, timeout=start_timeout)
        except AssertionError:
            self.kill()
            raise AssertionError(f"server did not start: stdout={self.stdout_lines()!r} stderr={self.stderr_lines()!r}") from None
        self.port = int(LISTENING_RE.search(line).group(1))  # type: ignore[union-attr]

    def _pump(self, stream, sink: list[str], name: str) -> None:
        for raw in iter(stream.readline, b""):
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._cond:
                sink.append(text)
                self._cond.notify_all()
        with self._cond:
            self._eof[name] = True
            self._cond.notify_all()

    # -- console

    def stdout_lines(self) -> list[str]:
        with self._cond:
            return list(self._stdout)

    def stderr_lines(self) -> list[str]:
        with self._cond:
            return list(self._stderr)

    def wait_for(self, predicate, timeout: float = WAIT, start: int = 0) -> str:
        """The first stdout line (from index ``start``) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self._stdout[start:]:
                    if predicate(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof["stdout"]:
                    raise AssertionError(f"no console line matched within {timeout}s; console: {self._stdout[-30:]!r}")
                self._cond.wait(remaining)

    def wait_for_text(self, text: str, timeout: float = WAIT, start: int = 0) -> str:
        return self.wait_for(lambda l: console_text(l, text), timeout=timeout, start=start)

    def count_text(self, text: str) -> int:
        return sum(1 for line in self.stdout_lines() if console_text(line, text))

    def wait_output_closed(self, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(self._eof.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("server output not closed in time")
                self._cond.wait(remaining)

    # -- process

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int:
        rc = self.proc.wait(timeout=timeout)
        self.wait_output_closed()
        return rc

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait for the exit; returns the exit status."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except Exception:
                pass

    def client(self, **kwargs) -> ChatClient:
        return ChatClient(self.port, **kwargs)


@pytest.fixture
def start_server():
    """Factory: ``start_server("--no-presence")`` -> ServerProcess; all killed at teardown."""
    started: list[ServerProcess] = []

    def start(*args: str, **kwargs) -> ServerProcess:
        server = ServerProcess(*args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            try:
                server.signal(signal.SIGTERM)
                server.proc.wait(timeout=5)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        server.kill()


@pytest.fixture
def server(start_server) -> ServerProcess:
    return start_server()


@pytest.fixture
def quiet_server(start_server) -> ServerProcess:
    """A server without presence lines: only chat and replies reach the clients."""
    return start_server("--no-presence")


# ---------------------------------------------------------------------- the client


class Closed(Exception):
    """The server closed the connection (EOF or reset) while a line was expected."""


class ChatClient:
    """A blocking line client: ``send`` lines, ``line()`` reads one, with timeouts."""

    _sync_counter = 0

    def __init__(
        self,
        port: int,
        *,
        welcome: bool = True,
        timeout: float = WAIT,
        rcvbuf: int | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle delays
        sock.settimeout(timeout)
        sock.connect((HOST, port))
        self.sock = sock
        self.timeout = timeout
        self.port = sock.getsockname()[1]
        self.buf = b""
        self.eof = False
        self.nick = str(self.port)
        self.room = "lobby"
        if welcome:
            first = self.line()
            match = WELCOME_RE.match(first)
            assert match, f"first line is not the welcome: {first!r}"
            self.nick, self.room = match.group(1), match.group(2)

    # -- sending

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, *lines: str) -> None:
        self.sock.sendall(b"".join(line.encode("utf-8") + b"\n" for line in lines))

    # -- receiving

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise TimeoutError from None
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            raise Closed(f"connection closed; unread: {self.buf[:200]!r}")
        self.buf += data

    def line_bytes(self, timeout: float | None = None) -> bytes:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\n" not in self.buf:
            if self.eof:
                raise Closed(f"connection closed; unread: {self.buf[:200]!r}")
            try:
                self._fill(deadline)
            except TimeoutError:
                raise AssertionError(f"no complete line within the timeout; partial: {self.buf[:200]!r}") from None
        raw, _, self.buf = self.buf.partition(b"\n")
        return raw

    def line(self, timeout: float | None = None) -> str:
        """The next line, without its "\\n"; must be valid UTF-8."""
        return self.line_bytes(timeout).decode("utf-8")

    def lines(self, count: int, timeout: float | None = None) -> list[str]:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        return [self.line(max(0.01, deadline - time.monotonic())) for _ in range(count)]

    def expect(self, *expected: str, timeout: float | None = None) -> None:
        """The next lines are exactly ``expected``, in order."""
        got = self.lines(len(expected), timeout)
        assert got == list(expected), f"{self.nick}: expected {list(expected)!r}, got {got!r}"

    def sync(self, timeout: float | None = None) -> list[str]:
        """Every line the server sent before it answered a marker; the marker is consumed.

        The marker is an unknown command: the server answers it in order with one
        ``*** Error: unknown command /NAME; ...`` line, after everything it queued for
        this client before it read the marker.
        """
        ChatClient._sync_counter += 1
        name = f"sync{ChatClient._sync_counter}x"
        marker = f"*** Error: unknown command /{name}; type /help for the list"
        self.send("/" + name)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        got: list[str] = []
        for _ in range(100_000):
            line = self.line(max(0.01, deadline - time.monotonic()))
            if line == marker:
                return got
            got.append(line)
        raise AssertionError("sync marker never came")

    def expect_nothing(self) -> None:
        """Nothing (else) was sent to this client before its sync marker."""
        extra = self.sync()
        assert extra == [], f"{self.nick}: unexpected lines {extra!r}"

    def until(self, predicate, timeout: float | None = None, limit: int = 100_000) -> tuple[list[str], str]:
        """Read until a line matches; returns (lines before it, the line)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        before: list[str] = []
        for _ in range(limit):
            line = self.line(max(0.01, deadline - time.monotonic()))
            if predicate(line):
                return before, line
            before.append(line)
        raise AssertionError(f"no matching line in {limit} lines")

    def read_to_eof(self, timeout: float | None = None, limit: int = 100_000) -> list[str]:
        """Every line until the server closes the connection (which must happen in time);
        then the socket is closed, as a client does on EOF."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        got: list[str] = []
        for _ in range(limit):
            try:
                got.append(self.line(max(0.01, deadline - time.monotonic())))
            except Closed:
                assert self.buf == b"", f"unterminated last line: {self.buf!r}"
                self.close()  # as a real client does on EOF
                return got
        raise AssertionError("no EOF")

    # -- closing

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def reset(self) -> None:
        """Close abruptly: SO_LINGER 0 makes the close send RST instead of FIN."""
        import struct

        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def __repr__(self) -> str:
        return f"<ChatClient {self.nick} port={self.port}>"


@pytest.fixture
def clients():
    """Factory for ChatClient bound to tests' servers; every client is closed at teardown."""
    made: list[ChatClient] = []

    def connect(server: ServerProcess, **kwargs) -> ChatClient:
        client = ChatClient(server.port, **kwargs)
        made.append(client)
        return client

    connect.made = made  # type: ignore[attr-defined]
    yield connect
    for client in made:
        client.close()


def join_all(connect, server: ServerProcess, count: int, presence: bool = True) -> list[ChatClient]:
    """Connect ``count`` clients one after the other; with presence, each earlier client
    reads the ``*** NICK joined lobby`` of every later one, so all start with empty input."""
    group: list[ChatClient] = []
    for _ in range(count):
        newcomer = connect(server)
        if presence:
            for other in group:
                other.expect(f"*** {newcomer.nick} joined lobby")
        group.append(newcomer)
    return group


# ------------------------------------------------------------------- the summary


def pytest_terminal_summary(terminalreporter) -> None:
    """Skips in one line, counted by reason (pyproject's addopts reports failures and errors
    only): a machine without redis-server, chromium or tmux skips whole files, and pytest's
    own -rs prints a line per test for that."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    if reasons:
        terminalreporter.write_line(
            f"{sum(reasons.values())} skipped: " + " | ".join(f"[{count}] {reason}" for reason, count in sorted(reasons.items()))
        )
