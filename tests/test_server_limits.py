"""End-to-end tests of contract section 4: bad input, limits and faults.

Real server process, real sockets on 127.0.0.1; sizes are kept small so the whole file
runs in seconds, and every loop is bounded in count and time.
"""

from __future__ import annotations

import re
import signal
import socket
import threading
import time

import psutil
import pytest
from conftest import WELCOME_RE, ChatClient, Closed, join_all

pytestmark = pytest.mark.timeout(60)

TOO_LONG = "*** Error: line too long (more than {} bytes); it was discarded"


# ------------------------------------------------------------------------ long lines


def test_overlong_line_streamed_without_newline(quiet_server, clients):
    a, b = join_all(clients, quiet_server, 2, presence=False)
    a.send("before")
    b.expect(f"{a.nick}: before")
    chunk = b"y" * 65536
    for _ in range(16):  # 1 MiB with no newline, in pieces
        a.send_raw(chunk)
    a.send_raw(b"\n")
    a.send("after")
    a.expect(TOO_LONG.format(4096))
    b.expect(f"{a.nick}: after")  # nothing of the long line reached b
    a.expect_nothing()
    b.expect_nothing()
    # The connection is still fully usable.
    b.send("reply")
    a.expect(f"{b.nick}: reply")


def test_line_length_boundary(quiet_server, clients):
    a, b = join_all(clients, quiet_server, 2, presence=False)
    exact = "e" * 4096
    a.send(exact)
    b.expect(f"{a.nick}: {exact}")
    a.send_raw(exact.encode() + b"\r\n")  # the line ending does not count
    b.expect(f"{a.nick}: {exact}")
    a.send("f" * 4097)
    a.expect(TOO_LONG.format(4096))
    a.send("short")
    b.expect(f"{a.nick}: short")
    a.expect_nothing()
    b.expect_nothing()


def test_max_line_flag(start_server, clients):
    server = start_server("--max-line", "100", "--no-presence")
    a, b = join_all(clients, server, 2, presence=False)
    a.send("m" * 100)
    b.expect(f"{a.nick}: " + "m" * 100)
    a.send("m" * 101)
    a.expect(TOO_LONG.format(100))
    # A long line that is a command is discarded as well, not executed.
    a.send("/nick " + "n" * 200)
    a.expect(TOO_LONG.format(100))
    a.send("ok")
    b.expect(f"{a.nick}: ok")
    b.expect_nothing()


def test_partial_input_memory_is_bounded(quiet_server, clients):
    """32 MiB with no newline must not be held by the server (the limit is 4 KiB)."""
    a, b = join_all(clients, quiet_server, 2, presence=False)
    proc = psutil.Process(quiet_server.pid)
    before = proc.memory_info().rss
    chunk = b"z" * (1 << 20)
    peak = before
    for _ in range(32):
        a.send_raw(chunk)
        peak = max(peak, proc.memory_info().rss)
    a.send_raw(b"\n")
    a.expect(TOO_LONG.format(4096), timeout=15)
    peak = max(peak, proc.memory_info().rss)
    growth = peak - before
    assert growth < 12 * (1 << 20), f"server grew by {growth / (1 << 20):.1f} MiB while reading one long line"
    a.send("fine")
    b.expect(f"{a.nick}: fine")


# ---------------------------------------------------------------------- slow readers


def test_client_that_never_reads_is_dropped(start_server, clients):
    server = start_server("--max-sendq", "65536")
    sender = clients(server)
    reader = clients(server)
    sender.expect(f"*** {reader.nick} joined lobby")
    # The stuck client: a tiny receive buffer, and it never reads after the welcome.
    stuck = clients(server, rcvbuf=4096)
    sender.expect(f"*** {stuck.nick} joined lobby")
    reader.expect(f"*** {stuck.nick} joined lobby")

    received: list[str] = []
    reader_error: list[BaseException] = []
    done = threading.Event()

    def read_all() -> None:
        try:
            for _ in range(100_000):
                line = reader.line(timeout=20)
                received.append(line)
                if line == f"{sender.nick}: the end":
                    break
        except BaseException as exc:  # reported by the main thread
            reader_error.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=read_all, daemon=True)
    thread.start()

    dropped_text = f"Client 127.0.0.1:{stuck.port} disconnected (send queue exceeded)"
    payload = "p" * 1000
    batch = 20  # about 20 KB, well under --max-sendq: the live reader is never that far behind
    sent = 0

    def wait_reader(upto: int) -> None:
        deadline = time.monotonic() + 10
        while len(received) < upto and time.monotonic() < deadline and not done.is_set():
            time.sleep(0.001)
        assert len(received) >= upto, f"the reader is stuck at {len(received)} of {upto} lines; {reader_error}"

    # Far more than the kernel's buffers on both sides can hold, paced so that the live
    # reader keeps up (lockstep), until the server reports the drop (bounded by count and time).
    deadline = time.monotonic() + 30
    while sent < 20_000 and time.monotonic() < deadline:
        sender.send(*(f"{sent + i:06d} {payload}" for i in range(batch)))
        sent += batch
        wait_reader(sent)
        if server.count_text(dropped_text):
            break
    server.wait_for_text(dropped_text, timeout=10)
    # Some more after the drop, then the end marker.
    for _ in range(5):
        sender.send(*(f"{sent + i:06d} {payload}" for i in range(batch)))
        sent += batch
        wait_reader(sent)
    sender.send("the end")
    assert done.wait(30), "the reader did not get everything in time"
    thread.join(5)
    assert not reader_error, reader_error
    chat = [line for line in received if not line.startswith("*** ")]
    assert chat == [f"{sender.nick}: {i:06d} {payload}" for i in range(sent)] + [f"{sender.nick}: the end"]
    notices = [line for line in received if line.startswith("*** ")]
    assert all(re.fullmatch(rf"\*\*\* {stuck.nick} quit( \(.*\))?", line) for line in notices), notices
    # The stuck client's connection is closed: after what was buffered, EOF (or reset).
    stuck.sock.settimeout(10)
    total = 0
    for _ in range(100_000):
        try:
            data = stuck.sock.recv(1 << 20)
        except (TimeoutError, ConnectionResetError) as exc:
            assert not isinstance(exc, socket.timeout), "stuck client's connection was not closed"
            break
        if not data:
            break
        total += len(data)
    assert server.proc.poll() is None


def test_bytes_in_the_kernel_do_not_count_against_the_send_queue(start_server, clients):
    """--max-sendq counts what waits in the server, not what the kernel already holds: a
    client that is merely slow to read, with everything sitting in its socket buffer, is
    not dropped although it has been sent several times --max-sendq."""
    server = start_server("--max-sendq", "8192", "--no-presence")
    sender = clients(server)
    idle = clients(server)  # reads nothing until the end
    payload = "k" * 1000
    sent = 0
    for _step in range(12):  # 48 KB in 4 KB steps: far below a loopback socket's buffers
        sender.send(*(f"{sent + i:03d} {payload}" for i in range(4)))
        sent += 4
        sender.expect_nothing()  # paced by the server having read each step
        time.sleep(0.02)
    assert server.count_text(f"Client 127.0.0.1:{idle.port} disconnected (send queue exceeded)") == 0
    got = idle.lines(sent, timeout=10)
    assert got == [f"{sender.nick}: {i:03d} {payload}" for i in range(sent)]
    idle.expect_nothing()


# ---------------------------------------------------------------------- server full


def test_server_full_and_place_freed(start_server, clients):
    server = start_server("--max-clients", "2")
    a = clients(server)
    b = clients(server)
    a.expect(f"*** {b.nick} joined lobby")
    extra = clients(server, welcome=False)
    assert extra.read_to_eof() == ["*** Error: server full"]
    a.expect_nothing()
    b.expect_nothing()
    a.send("exit")
    a.read_to_eof()
    b.expect(f"*** {a.nick} quit")
    server.wait_for_text(f"Client 127.0.0.1:{a.port} disconnected")
    # The freed place can be used again (allow the server a moment to forget a).
    newcomer = None
    deadline = time.monotonic() + 3
    for _ in range(30):
        candidate = clients(server, welcome=False)
        first = candidate.line()
        if first != "*** Error: server full":
            newcomer = candidate
            break
        candidate.close()
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert newcomer is not None, "the freed place was never given out"
    match = re.fullmatch(r"\*\*\* Welcome, (\S+)! You are in lobby\. Type /help for commands\.", first)
    assert match, first
    b.expect(f"*** {match.group(1)} joined lobby")
    b.send("hi newcomer")
    newcomer.expect(f"{b.nick}: hi newcomer")
    # Full again.
    again = clients(server, welcome=False)
    assert again.read_to_eof() == ["*** Error: server full"]


def test_place_is_free_once_the_leaver_has_its_end_of_file(start_server, clients):
    # A leaver that reads to the end but keeps its socket open (the server then waits up
    # to 2 s for its close) has left all the same: its place, and its console line, do not
    # wait for that close.
    server = start_server("--max-clients", "2")
    a = clients(server)
    b = clients(server)
    a.expect(f"*** {b.nick} joined lobby")
    a.send("exit")
    with pytest.raises(Closed):
        a.line()
    started = time.monotonic()
    newcomer = clients(server, welcome=False)
    assert WELCOME_RE.match(newcomer.line()), "the place of a client that left was still taken"
    server.wait_for_text(f"Client 127.0.0.1:{a.port} disconnected", timeout=1.0)
    assert time.monotonic() - started < 1.0
    b.send("/who")
    b.until(lambda line: line.startswith("*** Members of lobby (2): "))


# --------------------------------------------------------------------------- faults


def test_reset_mid_line(server, clients):
    a, b, c = join_all(clients, server, 3)
    a.send_raw(b"half a line that never ends")
    time.sleep(0.05)
    a.reset()
    for other in (b, c):
        line = other.line()
        assert re.fullmatch(rf"\*\*\* {a.nick} quit( \(.*\))?", line), line
    server.wait_for(lambda l: f"Client 127.0.0.1:{a.port} disconnected" in l)
    b.send("still chatting")
    c.expect(f"{b.nick}: still chatting")
    c.send("me too")
    b.expect(f"{c.nick}: me too")
    for other in (b, c):
        assert not any("half a line" in line for line in other.sync())
    d = clients(server)  # and the server still accepts
    b.expect(f"*** {d.nick} joined lobby")


def test_half_closed_client(server, clients):
    a, b = join_all(clients, server, 2)
    a.send("last words")
    a.sock.shutdown(socket.SHUT_WR)
    b.expect(f"{a.nick}: last words")
    line = b.line()
    assert re.fullmatch(rf"\*\*\* {a.nick} quit( \(.*\))?", line), line
    a.read_to_eof()  # the server closes its side too
    server.wait_for(lambda l: f"Client 127.0.0.1:{a.port} disconnected" in l)
    c = clients(server)
    b.expect(f"*** {c.nick} joined lobby")
    c.send("hello")
    b.expect(f"{c.nick}: hello")


def test_vanishing_clients_do_not_delay_the_others(quiet_server, clients):
    a, b = join_all(clients, quiet_server, 2, presence=False)
    for i in range(30):
        # Some vanish before even reading the welcome, some mid-line.
        ghost = ChatClient(quiet_server.port, welcome=i % 3 != 0)
        if i % 3:
            ghost.send_raw(b"unfinished " * 10)
        if i % 2:
            ghost.reset()
        else:
            ghost.close()
        a.send(f"tick {i}")
        b.expect(f"{a.nick}: tick {i}", timeout=2)
    a.expect_nothing()


# -------------------------------------------------------------------- many clients


def test_broadcast_to_300_clients(start_server, clients):
    quiet_server = start_server("--no-presence")  # all from 127.0.0.1: the default must allow it
    count = 300
    socks: list[ChatClient] = []
    # Connect all at once, then read the welcomes.
    for _ in range(count):
        socks.append(clients(quiet_server, welcome=False))
    nicks = set()
    for client in socks:
        line = client.line(timeout=10)
        match = re.match(r"\*\*\* Welcome, (\S+)! You are in lobby\.", line)
        assert match, line
        client.nick = match.group(1)
        nicks.add(client.nick)
    assert len(nicks) == count
    sender = socks[0]
    sender.send("broadcast to everyone", "second line")
    for client in socks[1:]:
        client.expect(f"{sender.nick}: broadcast to everyone", f"{sender.nick}: second line", timeout=10)
    # Exactly once: nothing more for anybody (the sender included).
    for client in (socks[0], socks[1], socks[150], socks[-1]):
        client.expect_nothing()
    sender.send("/stats")
    lines = sender.sync()
    assert lines[0] == f"*** {count} connected in 1 room" or lines[0] == f"*** {count} connected in 1 rooms", lines


def test_a_flooding_client_takes_no_time_from_the_others(start_server, clients):
    """One client sending as fast as it can (no --rate) does not delay a chat elsewhere,
    and a SIGTERM still stops the server in time."""
    server = start_server("--no-presence", "--quiet")
    hog = clients(server)
    b, c = clients(server), clients(server)
    for client in (b, c):
        client.send("/join quiet-room")
        client.expect("*** You are now in quiet-room")
    stop = threading.Event()
    block = (b"f" * 100 + b"\n") * 1000

    def flood() -> None:
        deadline = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                hog.sock.sendall(block)
            except OSError:
                return

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    try:
        time.sleep(0.3)
        worst = 0.0
        for i in range(10):
            started = time.monotonic()
            b.send(f"ping {i}")
            c.expect(f"{b.nick}: ping {i}", timeout=10)
            worst = max(worst, time.monotonic() - started)
        assert worst < 1.0, f"a chat line took {worst:.2f}s while another client flooded"
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0
        assert time.monotonic() - started < 10
    finally:
        stop.set()
        thread.join(5)


# ----------------------------------------------------------------------- throttling


def test_rate_limit_throttles_without_loss(start_server, clients):
    server = start_server("--rate", "20", "--burst", "5", "--no-presence")
    a, b, c = join_all(clients, server, 3, presence=False)
    lines = [f"burst line {i:02d}" for i in range(60)]
    started = time.monotonic()
    a.send(*lines)
    # While a is held back, another client is not: its line comes through at once.
    time.sleep(0.5)
    c_sent = time.monotonic()
    c.send("not throttled")
    before, _ = b.until(lambda line: line == f"{c.nick}: not throttled", timeout=10)
    c_latency = time.monotonic() - c_sent
    rest = b.lines(60 - len(before), timeout=20)
    elapsed = time.monotonic() - started
    assert before + rest == [f"{a.nick}: {text}" for text in lines]
    assert len(before) < 60, "a was not throttled at all"
    assert c_latency < 1.5, f"another client's line took {c_latency:.2f}s while a was throttled"
    # 55 lines beyond the burst at 20 per second: about 2.75 s; allow for scheduling.
    assert elapsed >= 2.0, f"60 lines at --rate 20 --burst 5 took only {elapsed:.2f}s"
    a.expect(f"{c.nick}: not throttled")
    for client in (a, b):
        client.expect_nothing()
    assert c.lines(60, timeout=5) == [f"{a.nick}: {text}" for text in lines]
    c.expect_nothing()


def test_no_rate_limit_by_default(quiet_server, clients):
    a, b = join_all(clients, quiet_server, 2, presence=False)
    started = time.monotonic()
    a.send(*(f"quick {i}" for i in range(200)))
    b.lines(200, timeout=10)
    assert time.monotonic() - started < 2.0
