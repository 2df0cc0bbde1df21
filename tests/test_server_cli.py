"""End-to-end tests of the server's command line and lifecycle (contract sections 1, 2, 4):
flags, startup errors, the listening line, and a clean stop on SIGTERM and SIGINT.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import HOST, LISTENING_RE, ROOT, ChatClient, ServerProcess, join_all, run_server_command, server_command

pytestmark = pytest.mark.timeout(60)


def assert_one_clean_error_line(result, *, allow_usage: bool = False) -> str:
    """Exactly one error line on stderr (after argparse's usage, if allowed), no traceback."""
    err = result.stderr
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    if allow_usage and len(lines) > 1:
        # Two lines at most: a one-line usage, then the error.
        assert len(lines) == 2, err
        assert lines[0].startswith("usage:"), err
    else:
        assert len(lines) == 1, err
    assert not LISTENING_RE.search(result.stdout), result.stdout
    return lines[-1]


# --------------------------------------------------------------------------- flags


def test_help_lists_every_flag():
    result = run_server_command("--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    for flag in (
        "--host",
        "--port",
        "--max-line",
        "--max-sendq",
        "--max-clients",
        "--rate",
        "--burst",
        "--no-presence",
        "--quiet",
        "--log-level",
    ):
        assert flag in result.stdout, flag
    assert "Traceback" not in result.stderr


def test_port_zero_binds_a_real_port(server, clients):
    assert 0 < server.port < 65536
    # The line is on stdout, flushed although stdout is a pipe; the port accepts at once.
    client = clients(server)
    assert client.nick == str(client.port)


@pytest.mark.parametrize(
    "flags",
    [
        ("--max-line", "0"),
        ("--max-line", "-1"),
        ("--max-sendq", "0"),
        ("--max-clients", "0"),
        ("--port", "-5"),
        ("--port", "70000"),
        ("--port", "http"),
        ("--max-line", "lots"),
        ("--rate", "-1"),
        ("--burst", "0"),
        ("--turn-ms", "-1"),
        ("--turn-ms", "101"),
        ("--turn-ms", "nan"),
        ("--turn-ms", "soon"),
        ("--log-level", "chatty"),
        ("--no-such-flag",),
    ],
)
def test_bad_flag_values(flags):
    result = run_server_command("--host", HOST, *flags)
    assert result.returncode == 2, (flags, result.returncode, result.stderr)
    line = assert_one_clean_error_line(result, allow_usage=True)
    assert "error:" in line, line


def test_port_in_use():
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        blocker.bind((HOST, 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        result = run_server_command("--host", HOST, "--port", str(port))
    finally:
        blocker.close()
    assert result.returncode != 0
    line = assert_one_clean_error_line(result)
    assert str(port) in line, line
    assert "in use" in line.lower(), line


@pytest.mark.parametrize(
    ("host", "said"),
    [
        ("999.1.1.1", "does not resolve"),
        ("nosuch.invalid", "does not resolve"),
        ("not a host name!", "does not resolve"),
        ("192.0.2.1", "not an address of this machine"),
    ],
)
def test_bad_host(host, said):
    result = run_server_command("--host", host, "--port", "0")
    assert result.returncode != 0
    line = assert_one_clean_error_line(result)
    assert said in line, line
    assert repr(host) in line, line


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("other", ["--web-port", "--metrics-port"])
def test_one_port_for_two_flags_is_one_line_before_anything_listens(other):
    port = str(_free_port())
    result = run_server_command("--host", HOST, "--port", port, other, port)
    assert result.returncode != 0
    line = assert_one_clean_error_line(result)
    assert f"--port and {other} are both {port}" in line, line
    assert result.stdout == "", result.stdout  # no "Server listening", no "Server stopped"


@pytest.mark.parametrize(("flag", "said"), [("--web-port", "cannot listen"), ("--metrics-port", "cannot serve metrics")])
def test_other_port_in_use_is_one_line_before_anything_listens(flag, said):
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        blocker.bind((HOST, 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        result = run_server_command("--host", HOST, "--port", "0", flag, str(port))
    finally:
        blocker.close()
    assert result.returncode != 0
    line = assert_one_clean_error_line(result)
    assert said in line and f"port {port} is already in use" in line, line
    assert result.stdout == "", result.stdout  # nothing listened, nothing stopped


@pytest.mark.parametrize(
    ("module", "prog"),
    [("geventchat.server", "geventchat-server"), ("geventchat.client", "geventchat"), ("geventchat", "geventchat")],
)
def test_version_and_help_of_every_command(module, prog):
    from geventchat import __version__

    result = subprocess.run(
        [sys.executable, "-m", module, "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{prog} {__version__}"
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {prog} [options]"), result.stdout
    assert "--host" in result.stdout and "--port" in result.stdout


def test_python_m_geventchat_is_the_client(server):
    """``python -m geventchat`` connects like ``python -m geventchat.client`` (piped)."""
    result = subprocess.run(
        [sys.executable, "-m", "geventchat", "--host", HOST, "--port", str(server.port)],
        cwd=ROOT,
        input="/who\nexit\n",
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Connected to chat server at {HOST}:{server.port}. Type 'exit' to leave."
    assert lines[1].startswith("*** Welcome, "), lines
    assert lines[-1] == "Disconnected from server", lines


# ---------------------------------------------------------------------- stopping


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_with_clients_connected(start_server, clients, signum):
    server: ServerProcess = start_server()
    a, b, c = join_all(clients, server, 3)
    a.send("before the stop")
    b.expect(f"{a.nick}: before the stop")
    c.expect(f"{a.nick}: before the stop")
    c.send_raw(b"an unfinished line")  # one client is mid-line
    stuck = clients(server)  # and one never reads again
    for other in (a, b, c):
        other.expect(f"*** {stuck.nick} joined lobby")
    started = time.monotonic()
    server.signal(signum)
    for client in (a, b, c):
        lines = client.read_to_eof(timeout=10)
        assert lines == ["*** Server shutting down"], (client.nick, lines)
    rc = server.wait(timeout=max(0.1, 10 - (time.monotonic() - started)))
    elapsed = time.monotonic() - started
    assert rc == 0
    assert elapsed < 10, elapsed
    console = server.stdout_lines()
    assert any(line == "Server stopped" or line.endswith(" Server stopped") for line in console), console
    assert console[-1].endswith("Server stopped"), console
    assert "Traceback" not in "\n".join(server.stderr_lines()), server.stderr_lines()
    # The partial line was not relayed as a message.
    assert not any("an unfinished line" in line for line in console)


def test_signal_stops_an_idle_server(start_server):
    server = start_server()
    # A signal at the very moment of the listening line is test_server_startup_race.py's
    # subject; here the server has settled.
    time.sleep(0.3)
    started = time.monotonic()
    server.signal(signal.SIGINT)
    assert server.wait(timeout=10) == 0
    assert time.monotonic() - started < 10
    assert server.stdout_lines()[-1].endswith("Server stopped")
    assert server.stderr_lines() == []


def test_stop_while_a_client_lags_with_pending_output(start_server, clients):
    """A client that never reads, with output queued for it, cannot hold the stop up."""
    server = start_server("--max-sendq", str(1 << 24))
    a = clients(server)
    lagging = clients(server, rcvbuf=4096)
    a.expect(f"*** {lagging.nick} joined lobby")
    payload = "q" * 1000
    a.send(*(f"{i} {payload}" for i in range(3000)))  # ~3 MB, mostly waiting for lagging
    server.wait_for_text(f"{a.nick}: 2999 {payload}", timeout=10)
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    rc = server.wait(timeout=10)
    assert rc == 0
    assert time.monotonic() - started < 10
    assert server.stdout_lines()[-1].endswith("Server stopped")


def test_stop_flushes_pending_output(start_server, clients):
    """Everything relayed before the stop reaches a (slow) reader, then the notice, then EOF."""
    server = start_server("--no-presence", "--max-sendq", str(1 << 25))
    a, b = join_all(clients, server, 2, presence=False)
    slow = clients(server, rcvbuf=4096)
    count = 20_000
    payload = "w" * 150
    # ~3 MB: more than the kernel's buffers take, so most of it waits in the server.
    a.send(*(f"{i:05d} {payload}" for i in range(count)))
    b.lines(count, timeout=20)
    server.wait_for_text(f"{a.nick}: {count - 1:05d} {payload}", timeout=10)
    server.signal(signal.SIGTERM)
    lines = slow.read_to_eof(timeout=10)
    assert len(lines) == count + 1 and lines[-1] == "*** Server shutting down", (len(lines), lines[-2:])
    assert lines[:-1] == [f"{a.nick}: {i:05d} {payload}" for i in range(count)]
    assert server.wait(timeout=10) == 0


def test_console_script_entry_point():
    """pyproject's geventchat-server script points at a main that takes the same flags."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    target = scripts["geventchat-server"]
    module, _, func = target.partition(":")
    code = f"import sys; from {module} import {func} as main; sys.argv[0] = 'geventchat-server'; sys.exit(main())"
    result = subprocess.run([sys.executable, "-c", code, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert "--max-sendq" in result.stdout
    installed = shutil.which("geventchat-server")
    if installed:  # when the package is installed, the real script too
        result = subprocess.run([installed, "--help"], capture_output=True, text=True, timeout=20)
        assert result.returncode == 0, result.stderr
        assert "--max-sendq" in result.stdout


# ---------------------------------------------------------------------- the console


def test_console_reader_going_away_costs_nothing(clients):
    """``geventchat-server | head -1``: once the console's reader is gone, the server serves
    on with no error on stderr for every line it could not print, and stops cleanly."""
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        server_command("--host", HOST, "--port", "0"),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=write_end,
        stderr=subprocess.PIPE,
    )
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as console:
            first = console.readline().decode()  # the reader takes one line, then goes
        match = LISTENING_RE.search(first.rstrip("\n"))
        assert match, first
        port = int(match.group(1))
        a = ChatClient(port)
        b = ChatClient(port)
        a.expect(f"*** {b.nick} joined lobby")
        a.send("nobody reads the console")
        b.expect(f"{a.nick}: nobody reads the console")
        b.send("exit")
        b.read_to_eof()
        a.expect(f"*** {b.nick} quit")
        proc.send_signal(signal.SIGTERM)
        assert a.read_to_eof(timeout=10) == ["*** Server shutting down"]
        assert proc.wait(timeout=10) == 0
        assert proc.stderr.read().decode() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        proc.stderr.close()


@pytest.mark.parametrize(
    ("module", "prog"),
    [("geventchat.server", "geventchat-server"), ("geventchat.client", "geventchat"), ("bench", "python -m bench")],
)
def test_a_bad_flag_is_two_lines_on_every_command(module, prog):
    result = subprocess.run(
        [sys.executable, "-m", module, "--no-such-flag"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"usage: {prog} [options]  (--help lists them)",
        f"{prog}: error: unrecognized arguments: --no-such-flag",
    ], result.stderr
