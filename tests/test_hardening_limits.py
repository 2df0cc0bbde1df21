"""End-to-end tests of contract section 7's limits: --max-per-ip, --idle-timeout,
--line-timeout (slowloris), and the sweeper behind the timeouts (unit tests).

Real server process, real sockets on 127.0.0.1; timeouts are set to a second or so and
every wait is bounded.
"""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest
from conftest import HOST, ChatClient, join_all, run_server_command

from geventchat.core.protocol import LineFramer
from geventchat.doors.guard import AddressCounts, Sweeper, sweep_interval

pytestmark = pytest.mark.timeout(60)

TOO_MANY = "*** Error: too many connections from your address"


def client_from(port: int, source: str, **kwargs) -> ChatClient:
    """A ChatClient whose connection comes from another loopback address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    return ChatClient(port, sock=sock, **kwargs)


# ------------------------------------------------------------------------- per address


def test_max_per_ip_refuses_and_frees(start_server, clients):
    server = start_server("--max-per-ip", "2")
    a = clients(server)
    b = clients(server)
    a.expect(f"*** {b.nick} joined lobby")
    extra = clients(server, welcome=False)
    assert extra.read_to_eof() == [TOO_MANY]
    line = server.wait_for(lambda l: f"127.0.0.1:{extra.port}" in l)
    assert line.endswith(f"Refused connection from 127.0.0.1:{extra.port} (too many connections from this address)"), line
    # One line for the refusal, no "New connection" nor "disconnected" for it.
    assert sum(f"127.0.0.1:{extra.port}" in l for l in server.stdout_lines()) == 1
    a.expect_nothing()
    b.expect_nothing()
    # Another address is counted apart.
    other = client_from(server.port, "127.0.0.2")
    try:
        a.expect(f"*** {other.nick} joined lobby")
        # A freed place can be used again.
        b.send("exit")
        b.read_to_eof()
        server.wait_for_text(f"Client 127.0.0.1:{b.port} disconnected")
        again = clients(server)
        a.expect(f"*** {b.nick} quit", f"*** {again.nick} joined lobby")
        again.send("back")
        a.expect(f"{again.nick}: back")
    finally:
        other.close()


def test_max_per_ip_default_refuses_no_one_on_loopback(start_server, clients):
    """Every loopback client shares 127.0.0.1: the default must not cap them (contract 4:
    the defaults never refuse a well-behaved client)."""
    server = start_server("--no-presence")
    group = [clients(server, welcome=False) for _ in range(150)]
    for client in group:
        assert client.line(timeout=10).startswith("*** Welcome, ")
    assert server.count_text("too many connections") == 0


# ------------------------------------------------------------------------ idle timeout


def test_idle_timeout_drops_a_silent_client(start_server, clients):
    server = start_server("--idle-timeout", "1")
    silent = clients(server)
    talker = clients(server)
    silent.expect(f"*** {talker.nick} joined lobby")
    started = time.monotonic()
    # The talker keeps talking (and so stays); the silent one only reads.
    lines: list[str] = []
    for i in range(30):
        talker.send(f"tick {i}")
        time.sleep(0.1)
        if server.count_text(f"Client 127.0.0.1:{silent.port} disconnected (idle timeout)"):
            break
    server.wait_for_text(f"Client 127.0.0.1:{silent.port} disconnected (idle timeout)")
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed <= 4.0, elapsed  # due at 1 s, checked every 0.25 s; room for a loaded machine
    lines = silent.read_to_eof()
    assert all(re.fullmatch(rf"{talker.nick}: tick \d+", line) for line in lines), lines
    talker.until(lambda l: l == f"*** {silent.nick} quit (idle timeout)")
    talker.send("still here")
    newcomer = clients(server)
    talker.expect(f"*** {newcomer.nick} joined lobby")
    assert not server.count_text(f"Client 127.0.0.1:{talker.port} disconnected (idle timeout)")


def test_no_idle_timeout_by_default(server, clients):
    a, b = join_all(clients, server, 2)
    time.sleep(2.5)
    a.send("after a pause")
    b.expect(f"{a.nick}: after a pause")


# ------------------------------------------------------------------------ line timeout


def test_slowloris_is_dropped(start_server, clients):
    server = start_server("--line-timeout", "1")
    slow = clients(server)
    other = clients(server)
    slow.expect(f"*** {other.nick} joined lobby")
    started = time.monotonic()
    slow.send_raw(b"a line that ")
    # A byte every 0.1 s: never idle, never finished.
    gone_text = f"Client 127.0.0.1:{slow.port} disconnected (line timeout)"
    for _ in range(40):
        try:
            slow.send_raw(b"x")
        except OSError:
            break
        time.sleep(0.1)
        if server.count_text(gone_text):
            break
    server.wait_for_text(gone_text)
    assert 0.9 <= time.monotonic() - started <= 4.0
    other.expect(f"*** {slow.nick} quit (line timeout)")
    other.send("alive")
    other.expect_nothing()


def test_streaming_in_pieces_is_not_slowloris(start_server, clients):
    """Every chunk ends mid-line for 3 s, but lines keep completing: not dropped."""
    server = start_server("--line-timeout", "1", "--no-presence")
    a, b = join_all(clients, server, 2, presence=False)
    count = 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        a.send_raw(f"piece {count}\npiece ".encode())
        count += 1
        time.sleep(0.05)
        a.send_raw(f"{count}".encode())
        time.sleep(0.05)
        a.send_raw(b"\n")
        count += 1
    assert b.lines(count, timeout=10) == [f"{a.nick}: piece {i}" for i in range(count)]
    assert not server.count_text(f"Client 127.0.0.1:{a.port} disconnected (line timeout)")
    a.send("done")
    b.expect(f"{a.nick}: done")


def test_unfinished_line_after_a_long_silence(start_server, clients):
    """The timeout counts from the line's first byte, not from the last finished line."""
    server = start_server("--line-timeout", "1.5", "--no-presence")
    a, b = join_all(clients, server, 2, presence=False)
    a.send("first")
    b.expect(f"{a.nick}: first")
    time.sleep(2.0)
    a.send_raw(b"half")
    time.sleep(0.7)
    a.send_raw(b" and the rest\n")
    b.expect(f"{a.nick}: half and the rest")
    assert not server.count_text(f"Client 127.0.0.1:{a.port} disconnected (line timeout)")


def test_overlong_line_trickled_is_dropped(start_server, clients):
    server = start_server("--line-timeout", "1", "--max-line", "100", "--no-presence")
    a, b = join_all(clients, server, 2, presence=False)
    a.send_raw(b"z" * 500)  # already too long: discarding, still unfinished
    gone_text = f"Client 127.0.0.1:{a.port} disconnected (line timeout)"
    for _ in range(40):
        try:
            a.send_raw(b"z")
        except OSError:
            break
        time.sleep(0.1)
        if server.count_text(gone_text):
            break
    server.wait_for_text(gone_text)
    b.send("ok")
    b.expect_nothing()


def test_throttled_client_is_not_timed_out(start_server, clients):
    """Time a client spends waiting for the rate limit is not its idleness."""
    server = start_server("--rate", "5", "--burst", "1", "--idle-timeout", "1", "--line-timeout", "1", "--no-presence")
    a, b = join_all(clients, server, 2, presence=False)
    stop = threading.Event()

    def keep_alive() -> None:  # b only reads; blank lines (ignored) keep it from idling
        for _ in range(100):
            if stop.wait(0.2):
                return
            b.send_raw(b"\n")

    thread = threading.Thread(target=keep_alive, daemon=True)
    thread.start()
    try:
        lines = [f"line {i}" for i in range(12)]
        # One chunk: about 2.2 s of throttled reading, and an unfinished line at its end.
        a.send_raw("".join(f"{text}\n" for text in lines).encode() + b"tail without end")
        assert b.lines(12, timeout=10) == [f"{a.nick}: {text}" for text in lines]
    finally:
        stop.set()
        thread.join(5)
    assert not server.count_text(f"Client 127.0.0.1:{a.port} disconnected (idle timeout)")
    assert not server.count_text(f"Client 127.0.0.1:{a.port} disconnected (line timeout)")


@pytest.mark.parametrize(
    "flags", [("--idle-timeout", "-1"), ("--line-timeout", "soon"), ("--max-per-ip", "0"), ("--line-timeout", "nan")]
)
def test_bad_timeout_flags(flags):
    result = run_server_command("--host", HOST, *flags)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("usage:") is False


def test_help_names_the_new_flags():
    result = run_server_command("--help")
    for flag in ("--max-per-ip", "--idle-timeout", "--line-timeout"):
        assert flag in result.stdout


# ----------------------------------------------------------------- units of the guard


def test_address_counts():
    counts = AddressCounts(2)
    assert counts.acquire("a") and counts.acquire("a")
    assert not counts.acquire("a")
    assert counts.acquire("b")
    counts.release("a")
    assert counts.acquire("a")
    counts.release("a")
    counts.release("a")
    counts.release("b")
    assert len(counts) == 0


class FakeConn:
    def __init__(self, now: float) -> None:
        self.framer = LineFramer(100)
        self.last_input = self.line_mark = now
        self.partial_mark = self.partial_since = 0.0
        self.dropped = ""

    def drop(self, reason: str) -> None:
        self.dropped = reason

    def feed(self, data: bytes, now: float) -> None:
        self.last_input = now
        if self.framer.receive_data(data):
            self.line_mark = now


def test_sweeper_line_timeout_counts_from_first_sight():
    conn = FakeConn(0.0)
    sweeper = Sweeper(lambda: [conn], line_timeout=10)
    assert sweeper.interval == 1.0
    conn.feed(b"done\n", 0.0)
    sweeper.sweep(50.0)  # finished lines only: nothing to time
    conn.feed(b"part", 100.0)
    sweeper.sweep(100.5)
    sweeper.sweep(110.0)
    assert not conn.dropped
    sweeper.sweep(110.5)
    assert conn.dropped == "line timeout"


def test_sweeper_lines_completing_reset_the_clock():
    conn = FakeConn(0.0)
    sweeper = Sweeper(lambda: [conn], line_timeout=2)
    for t in range(100):
        conn.feed(b"x\nunfinished", float(t))  # completes one line, starts another
        sweeper.sweep(t + 0.5)
    assert not conn.dropped


def test_sweeper_idle():
    conn = FakeConn(0.0)
    seen = []
    sweeper = Sweeper(lambda: [conn], idle_timeout=5, on_timeout=seen.append)
    sweeper.sweep(4.9)
    assert not conn.dropped
    sweeper.sweep(5.0)
    assert conn.dropped == "idle timeout" and seen == ["idle timeout"]


def test_sweep_interval():
    assert sweep_interval(0, 0) == 0
    assert sweep_interval(0, 60) == 1.0
    assert sweep_interval(1, 60) == 0.25
    assert sweep_interval(0.01, 0) == 0.05


# ------------------------------------------------------- timeouts reach parked readers


@pytest.mark.parametrize(
    "flags, send, reason",
    [
        (("--idle-timeout", "3"), b"", "idle timeout"),
        (("--line-timeout", "3"), b"half a line, then silence", "line timeout"),
    ],
)
def test_timeouts_reach_a_parked_connection(start_server, clients, flags, send, reason):
    """A reader silent for PARK_AFTER (2 s) holds no greenlet; the sweeper still drops it."""
    server = start_server(*flags)
    silent = clients(server)
    other = clients(server)
    silent.expect(f"*** {other.nick} joined lobby")
    if send:
        silent.send_raw(send)
    started = time.monotonic()
    server.wait_for_text(f"Client 127.0.0.1:{silent.port} disconnected ({reason})", timeout=8)
    assert 2.5 <= time.monotonic() - started <= 6
    if reason == "line timeout":  # (with --idle-timeout, the other one is idle too)
        other.until(lambda l: l == f"*** {silent.nick} quit ({reason})")
    silent.read_to_eof()
