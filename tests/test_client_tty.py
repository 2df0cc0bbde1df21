"""The terminal client in a real terminal: tmux runs it, send-keys types, capture-pane looks.

Each test has its own tmux server (``tmux -L <unique name>``), killed at the end, and its
own chat server process, stopped by its pid. Every wait polls the screen with a deadline.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(ROOT), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

from test_client import HOSTILE_LINES, RawClient, RealServer, ScriptedServer  # noqa: E402

TMUX = shutil.which("tmux")
pytestmark = [
    pytest.mark.skipif(TMUX is None, reason="tmux is not installed: the real-terminal tests need it"),
    pytest.mark.timeout(30),
]
WAIT = 8.0
WIDTH, HEIGHT = 100, 30


class Tmux:
    """One detached tmux session of fixed size running one command, on a private socket."""

    def __init__(self, command: str) -> None:
        self.socket_name = f"gchat-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # The shell line after the client keeps the pane (and its exit status) on screen.
        shell = f'{command}; echo "[exit $?]"; sleep 60'
        self.tmux(
            "new-session",
            "-d",
            "-s",
            "chat",
            "-x",
            str(WIDTH),
            "-y",
            str(HEIGHT),
            "env",
            f"PYTHONPATH={ROOT}",
            "sh",
            "-c",
            shell,
        )
        self.socket_path = self.tmux("display-message", "-p", "#{socket_path}").strip()

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            [TMUX, "-L", self.socket_name, "-f", "/dev/null", *args],  # type: ignore[list-item]
            capture_output=True,
            timeout=10,
            cwd=ROOT,
        )
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout.decode("utf-8", "replace")

    def keys(self, text: str) -> None:
        """Type text literally."""
        self.tmux("send-keys", "-t", "chat", "-l", text)

    def press(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "chat", *keys)

    def screen(self) -> list[str]:
        return [line.rstrip() for line in self.tmux("capture-pane", "-p", "-t", "chat").splitlines()]

    def wait_screen(self, predicate, what: str, timeout: float = WAIT) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            lines = self.screen()
            if predicate(lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"screen never showed {what}:\n" + "\n".join(lines))
            time.sleep(0.05)

    def wait_text(self, text: str, timeout: float = WAIT) -> list[str]:
        return self.wait_screen(lambda lines: any(text in line for line in lines), repr(text), timeout)

    def input_line(self, lines: list[str]) -> str:
        """The last non-blank line: the prompt and what is being typed."""
        return next((line for line in reversed(lines) if line.strip()), "")

    def display(self, fmt: str) -> str:
        return self.tmux("display-message", "-p", "-t", "chat", fmt).strip()

    def kill(self) -> None:
        """Stop this test's own tmux server (and the client in it), and remove its socket."""
        subprocess.run([TMUX, "-L", self.socket_name, "kill-server"], capture_output=True, timeout=10)  # type: ignore[list-item]
        if self.socket_name in self.socket_path:
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass


def client_command(port: int, *args: str) -> str:
    argv = [sys.executable, "-m", "geventchat.client", "--host", "127.0.0.1", "--port", str(port), *args]
    return " ".join(shlex.quote(arg) for arg in argv)


@pytest.fixture
def tmux_session():
    made: list[Tmux] = []

    def start(command: str) -> Tmux:
        made.append(Tmux(command))
        return made[-1]

    yield start
    for one in made:
        one.kill()


@pytest.fixture
def server():
    srv = RealServer()
    yield srv
    srv.stop()


def test_incoming_message_does_not_break_the_line_being_typed(server, tmux_session):
    other = RawClient(server.port)
    try:
        nick = "tty" + uuid.uuid4().hex[:6]
        term = tmux_session(client_command(server.port, "--nick", nick))
        prompt = f"[lobby] {nick}>"
        term.wait_screen(lambda lines: term.input_line(lines) == prompt, "the prompt with the new nick")
        assert term.screen()[0] == f"Connected to chat server at 127.0.0.1:{server.port}. Type 'exit' to leave."

        term.keys("half a line")
        term.wait_screen(lambda lines: term.input_line(lines) == f"{prompt} half a line", "the half line")
        other.send("message from the raw client")
        # The message appears above the input line, and the half line is intact on it (the
        # prompt is redrawn right after the message is printed, so wait for both).
        lines = term.wait_screen(
            lambda lines: (
                any(line.endswith(f"{other.nick}: message from the raw client") for line in lines)
                and term.input_line(lines) == f"{prompt} half a line"
            ),
            "the message above the intact half line",
        )
        shown = next(i for i, line in enumerate(lines) if line.endswith(f"{other.nick}: message from the raw client"))
        assert shown < lines.index(f"{prompt} half a line")
        assert re.fullmatch(r"\d\d:\d\d " + re.escape(f"{other.nick}: message from the raw client"), lines[shown])

        term.keys(" and the rest")
        term.press("Enter")
        other.expect(f"{nick}: half a line and the rest")
        term.wait_screen(lambda lines: term.input_line(lines) == prompt, "an empty input line after Enter")

        # History: the up arrow brings the sent line back.
        term.press("Up")
        term.wait_screen(lambda lines: term.input_line(lines) == f"{prompt} half a line and the rest", "history")
        term.press("C-u")
        # Tab completes slash commands and the nicknames seen.
        term.keys("/jo")
        term.press("Tab")
        term.wait_screen(lambda lines: term.input_line(lines) == f"{prompt} /join", "/join completed")
        term.press("C-u")
        term.keys("hello " + other.nick[:2])
        term.press("Tab")
        term.wait_screen(lambda lines: f"{prompt} hello {other.nick}" in term.input_line(lines), "nick completed")
        term.press("C-u")

        # Ctrl-D on an empty line leaves.
        term.press("C-d")
        lines = term.wait_text("[exit 0]")
        assert "Disconnected from server" in lines
        assert "Connection closed by server" not in lines
    finally:
        other.close()


def test_ctrl_c_leaves_cleanly(server, tmux_session):
    term = tmux_session(client_command(server.port))
    term.wait_screen(lambda lines: term.input_line(lines).endswith(">"), "the prompt")
    term.keys("never sent")
    term.wait_screen(lambda lines: term.input_line(lines).endswith("> never sent"), "the half line")
    term.press("C-c")
    lines = term.wait_text("[exit 0]")
    assert "Disconnected from server" in lines
    assert not any("Traceback" in line or "KeyboardInterrupt" in line for line in lines)
    assert not any("never sent" in line for line in lines), lines  # no half line left behind


def test_own_lines_are_shown_time_stamped_like_received_ones(server, tmux_session):
    other = RawClient(server.port)
    try:
        nick = "me" + uuid.uuid4().hex[:6]
        term = tmux_session(client_command(server.port, "--nick", nick))
        prompt = f"[lobby] {nick}>"
        term.wait_screen(lambda lines: term.input_line(lines) == prompt, "the prompt with the new nick")
        other.send("first from the other")
        term.wait_text(f"{other.nick}: first from the other")
        shown_as = {
            "a line of mine": f"{nick}: a line of mine",
            "/me waves": f"* {nick} waves",
            "/who": "/who",
            "/login someone secretpass1": "/login someone ********",
        }
        for typed, echo in shown_as.items():  # each after the last one's echo, as a person types
            term.keys(typed)
            term.press("Enter")
            lines = term.wait_screen(
                lambda lines, echo=echo: any(line.endswith(" " + echo) for line in lines) and term.input_line(lines) == prompt,
                repr(echo),
            )
        other.expect(f"{nick}: a line of mine")
        stamp = r"\d\d:\d\d "
        assert any(re.fullmatch(stamp + re.escape(f"{other.nick}: first from the other"), line) for line in lines), lines
        assert any(re.fullmatch(stamp + re.escape(f"{nick}: a line of mine"), line) for line in lines), lines
        assert any(re.fullmatch(stamp + re.escape(f"* {nick} waves"), line) for line in lines), lines
        assert any(re.fullmatch(stamp + "/who", line) for line in lines), lines
        assert not any(line.startswith(f"{prompt} ") for line in lines), lines  # the sent input line is not left as typed
        assert not any("secretpass1" in line for line in lines), lines
    finally:
        other.close()


def test_pointed_at_the_web_port_it_says_so(tmux_session):
    from test_client import start_web_server, stop_process

    proc, _chat, web = start_web_server()
    try:
        term = tmux_session(client_command(web))
        lines = term.wait_text("No welcome from", timeout=WAIT + 5)
        hint = " ".join(line for line in lines if line.strip())
        assert f"No welcome from 127.0.0.1:{web} after 5 s: is it the chat port?" in hint, lines
    finally:
        stop_process(proc)


def test_server_shutdown_in_a_terminal(tmux_session):
    srv = RealServer()
    try:
        term = tmux_session(client_command(srv.port))
        term.wait_screen(lambda lines: term.input_line(lines).endswith(">"), "the prompt")
        term.keys("typing when the server goes")
        srv.stop()
        lines = term.wait_text("[exit 1]")
        assert "Connection closed by server" in lines
        assert not any("Traceback" in line for line in lines)
    finally:
        srv.stop()


def test_hostile_server_cannot_control_the_terminal(tmux_session):
    def script(srv: ScriptedServer, conn) -> None:
        conn.sendall(b"".join(HOSTILE_LINES) + b"last: line\n")
        srv.release.wait(WAIT)

    srv = ScriptedServer(script)
    try:
        term = tmux_session(client_command(srv.port))
        lines = term.wait_screen(
            lambda lines: any(line.endswith("last: line") for line in lines) and term.input_line(lines) == "[lobby] 4242>",
            "the last line and the prompt",
        )
        assert lines[0].startswith("Connected to chat server at")  # no clear screen, no reset
        assert any(line.endswith("evil: clear[2Jscreen") for line in lines)
        assert any(line.endswith("evil: bidi reversed isolate") for line in lines)
        assert "title" not in term.display("#{pane_title}")
        assert term.display("#{alternate_on}") == "0"
    finally:
        srv.release.set()
        srv.stop()
    lines = term.wait_text("[exit 1]")
    assert "Connection closed by server" in lines


def _syn_sent_to(port: int) -> bool:
    """True while some socket of this machine is in SYN-SENT towards 127.0.0.1:port."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "02" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                return True
    return False


@pytest.fixture
def unanswered_port():
    """A port whose connect() hangs: a listener with a full accept queue, so the kernel
    drops every further SYN (as an unreachable host or a firewall would)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for one in fillers + [listener]:
        one.close()


@pytest.mark.parametrize("stage", ["tcp", "tls"])
def test_ctrl_c_while_connecting_is_one_line_and_exit_2(stage, unanswered_port, tmux_session):
    # tcp: the connect itself hangs. tls: the server accepts and never answers the handshake.
    srv = None
    if stage == "tcp":
        port, args = unanswered_port, ()
        started = lambda: _syn_sent_to(port)  # noqa: E731
    else:
        accepted = threading.Event()

        def silent(srv: ScriptedServer, conn) -> None:
            accepted.set()
            srv.release.wait(WAIT * 2)

        srv = ScriptedServer(silent)
        port, args = srv.port, ("--tls",)
        started = accepted.is_set
    try:
        # Before the prompt the terminal is in cooked mode: Ctrl-C is a SIGINT to the whole
        # foreground group, the shell included; its trap keeps it alive to show the status.
        term = tmux_session("trap : INT; " + client_command(port, *args))
        deadline = time.monotonic() + WAIT
        while not started():
            assert time.monotonic() < deadline, "the client never started connecting"
            time.sleep(0.05)
        time.sleep(0.3)  # into the wait itself
        term.press("C-c")
        lines = term.wait_text("[exit 2]")
        shown = [line.removeprefix("^C") for line in lines if line.strip()]  # the tty echoes ^C
        assert shown[:-1] == [f"Error: cannot connect to 127.0.0.1:{port}: interrupted"], shown
        assert not any("Traceback" in line or "KeyboardInterrupt" in line for line in lines)
    finally:
        if srv is not None:
            srv.release.set()
            srv.stop()


def test_tab_completes_the_names_listed_by_who(server, tmux_session):
    # Someone who was there before us and has said nothing: /who is where we learn the name.
    quiet = RawClient(server.port)
    try:
        name = "zq" + uuid.uuid4().hex[:6]
        quiet.send(f"/nick {name}")
        quiet.expect(f"*** You are now known as {name}")
        term = tmux_session(client_command(server.port, "--nick", "me" + uuid.uuid4().hex[:6]))
        term.wait_screen(lambda lines: term.input_line(lines).endswith(">"), "the prompt")
        term.keys("/who")
        term.press("Enter")
        term.wait_text(f" {name}")
        term.keys("hi " + name[:3])
        term.press("Tab")
        term.wait_screen(lambda lines: term.input_line(lines).endswith(f"> hi {name}"), "the name from /who completed")
    finally:
        quiet.close()


def test_a_replay_block_shows_dimmed_in_local_time_and_live_lines_as_before(tmux_session):
    block = (
        b"*** Welcome, 4242! You are in lobby. Type /help for commands.\n"
        b"*** Recent messages in lobby (2):\n"
        b"*** [2026-01-02 03:04:05] ann: from before\n"
        b"*** [2026-01-02 03:05:06] * ann waved\n"
        b"*** End of recent messages\n"
    )

    def script(srv: ScriptedServer, conn) -> None:
        conn.sendall(block)
        srv.release.wait(WAIT)
        conn.sendall(b"bob: live now\n")
        srv.release.wait(WAIT)

    srv = ScriptedServer(script)
    try:
        # Kolkata is UTC+5:30 all year: 03:04 UTC is 08:34 there.
        term = tmux_session("TZ=Asia/Kolkata " + client_command(srv.port))
        lines = term.wait_text("End of recent messages")
        assert any(line.endswith("2026-01-02 08:34 ann: from before") for line in lines), lines
        assert any(line.endswith("2026-01-02 08:35 * ann waved") for line in lines), lines
        assert not any("[2026-01-02 03:04:05]" in line for line in lines), lines  # shown in local time, not as sent
        coloured = term.tmux("capture-pane", "-p", "-e", "-t", "chat").splitlines()
        history = next(line for line in coloured if "from before" in line)
        # grey (#808080 at 256 or true colours), nothing bold: no nick colour, no highlight
        assert "\x1b[1m" not in history and ("38;5;244m" in history or "38;2;128;128;128m" in history), repr(history)
        srv.release.set()
        srv.release.clear()
        lines = term.wait_text("bob: live now")
        live = next(line for line in term.tmux("capture-pane", "-p", "-e", "-t", "chat").splitlines() if "live now" in line)
        assert "\x1b[1m" in live or "1;" in live, repr(live)  # a live line: the nick bold in its colour, as before
        assert any(re.fullmatch(r"\d\d:\d\d bob: live now", line) for line in lines), lines
    finally:
        srv.release.set()
        srv.stop()
