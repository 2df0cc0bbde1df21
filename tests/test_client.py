"""The terminal client in pipe mode, end to end over real sockets on 127.0.0.1.

The chat server is the real one (``python -m geventchat.server --port 0``); the tests of
hostile or scripted behaviour use tiny socket servers of their own. Every process and
thread started here is stopped here, by its own handle; every wait is bounded.
"""

from __future__ import annotations

import io
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from geventchat.client import base as client  # noqa: E402
from geventchat.client.ui import ChatCompleter, ChatState, format_line, nick_style  # noqa: E402
from geventchat.core import protocol  # noqa: E402

pytestmark = pytest.mark.timeout(30)

ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
CONNECTED_RE = re.compile(r"Connected to chat server at 127\.0\.0\.1:\d+\. Type 'exit' to leave\.")
WAIT = 5.0  # seconds any single expected event may take


# ------------------------------------------------------------------------- servers


class RealServer:
    """``python -m geventchat.server`` on a free port; stopped with SIGTERM by its pid."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "geventchat.server", "--host", "127.0.0.1", "--port", "0"],
            cwd=ROOT,
            env=ENV,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.output: list[str] = []
        ready: queue.Queue[int] = queue.Queue()
        threading.Thread(target=self._drain, args=(ready,), daemon=True).start()
        try:
            self.port = ready.get(timeout=15)
        except queue.Empty:
            self.stop()
            raise RuntimeError("server did not start: " + "".join(self.output)) from None

    def _drain(self, ready: queue.Queue[int]) -> None:
        for raw in self.proc.stdout:  # type: ignore[union-attr]
            line = raw.decode("utf-8", "replace")
            self.output.append(line)
            match = re.search(r"Server listening on 127\.0\.0\.1:(\d+)", line)
            if match:
                ready.put(int(match.group(1)))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def server():
    srv = RealServer()
    yield srv
    srv.stop()


@pytest.fixture
def own_server():
    """A server of this test's own, for tests that stop it."""
    srv = RealServer()
    yield srv
    srv.stop()


# ------------------------------------------------------------------------- clients


class RawClient:
    """A plain socket client that reads whole lines with a deadline."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.buffer = b""
        welcome = self.line()
        match = re.match(r"\*\*\* Welcome, (\S+)! You are in (\S+)\.", welcome)
        assert match, welcome
        self.nick = match.group(1)

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n")

    def line(self, timeout: float = WAIT) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line; have {self.buffer!r}")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(f"closed; have {self.buffer!r}")
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def expect(self, wanted: str, timeout: float = WAIT) -> list[str]:
        """Read lines until one equals ``wanted``; returns every line read."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                seen.append(self.line(max(0.01, deadline - time.monotonic())))
            except (TimeoutError, EOFError) as exc:
                raise AssertionError(f"{wanted!r} not received; got {seen!r} ({exc})") from None
            if seen[-1] == wanted:
                return seen

    def expect_any(self, pattern: str, timeout: float = WAIT) -> list[str]:
        """Read lines until one matches the regex ``pattern``; returns every line read."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while not seen or not re.fullmatch(pattern, seen[-1]):
            try:
                seen.append(self.line(max(0.01, deadline - time.monotonic())))
            except (TimeoutError, EOFError) as exc:
                raise AssertionError(f"no line like {pattern!r}; got {seen!r} ({exc})") from None
        return seen

    def quiet_lines(self, quiet: float = 0.3) -> list[str]:
        lines: list[str] = []
        while True:
            try:
                lines.append(self.line(quiet))
            except (TimeoutError, EOFError):
                return lines

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(server):
    made: list[RawClient] = []

    def make() -> RawClient:
        made.append(RawClient(server.port))
        return made[-1]

    yield make
    for one in made:
        one.close()


class PipeClient:
    """``python -m geventchat.client`` with stdin and stdout pipes; stdout read by a thread."""

    def __init__(self, port: int, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "geventchat.client", "--host", "127.0.0.1", "--port", str(port), *args],
            cwd=ROOT,
            env=ENV,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for raw in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def write(self, text: str) -> None:
        self.proc.stdin.write(text.encode())  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def expect(self, pattern: str, timeout: float = WAIT) -> str:
        """The next printed line matching the regex ``pattern`` (fully)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line like {pattern!r}; saw {self.seen!r}") from None
            if line is None:
                raise AssertionError(f"output ended before {pattern!r}; saw {self.seen!r}")
            self.seen.append(line)
            if re.fullmatch(pattern, line):
                return line

    def finish(self, timeout: float = 10, close_stdin: bool = True) -> tuple[int, list[str], str]:
        """Wait for the exit; returns (status, every stdout line, stderr)."""
        if close_stdin and self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        status = self.proc.wait(timeout=timeout)
        while True:
            line = self.lines.get(timeout=5)
            if line is None:
                break
            self.seen.append(line)
        return status, self.seen, self.proc.stderr.read().decode()  # type: ignore[union-attr]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()  # type: ignore[union-attr]
            except OSError:
                pass


@pytest.fixture
def pipe_client():
    made: list[PipeClient] = []

    def make(port: int, *args: str) -> PipeClient:
        made.append(PipeClient(port, *args))
        return made[-1]

    yield make
    for one in made:
        one.kill()


def run_client(port: int, stdin: str, *args: str, timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "geventchat.client", "--host", "127.0.0.1", "--port", str(port), *args],
        cwd=ROOT,
        env=ENV,
        input=stdin.encode(),
        capture_output=True,
        timeout=timeout,
    )


def unique(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:8]


def welcome_nick(line: str) -> str:
    match = re.match(r"\*\*\* Welcome, (\S+)! You are in lobby\.", line)
    assert match, line
    return match.group(1)


# ------------------------------------------------------------------ pipe mode, e2e


def test_connect_line_then_exit(server):
    done = run_client(server.port, "exit\n")
    lines = done.stdout.decode().splitlines()
    assert done.returncode == 0, done
    assert CONNECTED_RE.fullmatch(lines[0])
    assert lines[0] == f"Connected to chat server at 127.0.0.1:{server.port}. Type 'exit' to leave."
    assert lines[-1] == "Disconnected from server"
    assert "Connection closed by server" not in done.stdout.decode()
    assert "\x1b" not in done.stdout.decode() and ">" not in lines[-1]  # no prompt, no colour
    assert done.stderr == b""


def test_end_of_input_leaves_cleanly(server, raw):
    other = raw()
    done = run_client(server.port, "last words without newline")
    lines = done.stdout.decode().splitlines()
    assert done.returncode == 0, done
    assert lines[-1] == "Disconnected from server"
    assert "Connection closed by server" not in lines
    other.expect_any(r"\S+: last words without newline")


def test_quit_command_leaves_like_exit(server):
    done = run_client(server.port, "/quit bye now\nthis is never sent\n")
    lines = done.stdout.decode().splitlines()
    assert done.returncode == 0
    assert lines[-1] == "Disconnected from server"
    assert "Connection closed by server" not in lines


def test_send_and_receive(server, raw, pipe_client):
    other = raw()
    chat = pipe_client(server.port)
    assert CONNECTED_RE.fullmatch(chat.expect(r"Connected to .*"))
    me = welcome_nick(chat.expect(r"\*\*\* Welcome, .*"))
    other.send("hello pipe client")
    chat.expect(re.escape(f"{other.nick}: hello pipe client"))
    chat.write("hello raw client\n")
    other.expect(f"{me}: hello raw client")
    chat.write("//slash text\n")
    other.expect(f"{me}: /slash text")
    chat.write("exit\n")
    status, lines, err = chat.finish()
    assert status == 0
    assert lines[-1] == "Disconnected from server"
    assert "Connection closed by server" not in lines
    assert err == ""


def test_nick_flag_names_the_client(server, raw):
    other = raw()
    nick = unique("nk")
    done = run_client(server.port, "hello as nick\nexit\n", "--nick", nick)
    assert done.returncode == 0
    other.expect(f"{nick}: hello as nick")
    assert done.stdout.decode().splitlines()[-1] == "Disconnected from server"


def test_room_flag_enters_the_room(server, raw):
    room = unique("room")
    lobby = raw()
    inside = raw()
    inside.send(f"/join {room}")
    inside.expect_any(rf"\*\*\* .*{room}.*")  # the reply to /join names the room
    done = run_client(server.port, "hello room\nexit\n", "--room", room)
    assert done.returncode == 0
    heard = inside.expect_any(r"\S+: hello room")
    assert heard[-1].endswith(": hello room")
    assert not any(line.endswith(": hello room") for line in lobby.quiet_lines())


def test_server_shutdown_closes_the_client(own_server, pipe_client):
    chat = pipe_client(own_server.port)
    chat.expect(r"\*\*\* Welcome, .*")
    own_server.stop()
    status, lines, err = chat.finish()
    assert status == 1, (lines, err)
    assert lines[-1] == "Connection closed by server"
    assert "Disconnected from server" not in lines
    assert "Traceback" not in err


def test_refused_connection_is_one_line_and_status_2():
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        done = run_client(port, "")
    err = done.stderr.decode()
    assert done.returncode == 2
    assert err.splitlines() == [f"Error: cannot connect to 127.0.0.1:{port}: Connection refused"]
    assert done.stdout == b""


def test_bad_flags_exit_non_zero_without_traceback():
    for args in (["--port", "99999"], ["--nick", "two words"], ["--room", "no/slash"], ["--bogus"]):
        done = subprocess.run(
            [sys.executable, "-m", "geventchat.client", *args],
            cwd=ROOT,
            env=ENV,
            capture_output=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 2, args
        assert "Traceback" not in done.stderr.decode()
        assert done.stderr.decode().splitlines()[-1].startswith("geventchat: error:")


def test_help():
    done = subprocess.run(
        [sys.executable, "-m", "geventchat.client", "--help"], cwd=ROOT, env=ENV, capture_output=True, timeout=10
    )
    assert done.returncode == 0
    for flag in ("--host", "--port", "--nick", "--room"):
        assert flag in done.stdout.decode()


# ------------------------------------------------------------- scripted fake servers


class ScriptedServer:
    """Accepts one client and runs ``script(conn)`` on it in a thread."""

    def __init__(self, script) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = b""
        self.error: BaseException | None = None
        self.release = threading.Event()  # for scripts that wait for the test
        self.thread = threading.Thread(target=self._run, args=(script,), daemon=True)
        self.thread.start()

    def _run(self, script) -> None:
        try:
            self.listener.settimeout(WAIT * 2)
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(WAIT)
                script(self, conn)
        except BaseException as exc:  # reported by stop()
            self.error = exc
        finally:
            self.listener.close()

    def read_until(self, conn: socket.socket, marker: bytes) -> None:
        while marker not in self.received:
            data = conn.recv(4096)
            if not data:
                raise EOFError(self.received)
            self.received += data

    def stop(self) -> None:
        self.thread.join(timeout=WAIT * 3)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


HOSTILE_LINES = [
    b"*** Welcome, 4242! You are in lobby. Type /help for commands.\n",
    b"evil: clear\x1b[2Jscreen\n",
    b"evil: set \x1b]0;title\x07the title\n",
    b"evil: c1 \xc2\x9b31m csi and \xc2\x9d osc\n",
    b"evil: bidi \xe2\x80\xaereversed\xe2\x80\xac \xe2\x81\xa6isolate\xe2\x81\xa9\n",
    b"evil: bell\x07 backspace\x08 cr\r del\x7f tab\there nul\x00\n",
    b"* evil \x1b[31mred action\n",
    b"*evil\x1b[0m* private\n",
    b"*** \x1b[?1049hnotice \x9b bad utf8 \xff\xfe\n",
    b"\x1bc\x1b[H\x1b[999;999H\n",
]
FORBIDDEN = ["\x1b", "\x07", "\x08", "\x00", "\x7f", "\x9b", "\x9d", "\u202e", "\u202c", "\u2066", "\u2069", "\t"]


def test_hostile_server_output_holds_no_control_sequences(pipe_client):
    def script(srv: ScriptedServer, conn: socket.socket) -> None:
        conn.sendall(b"".join(HOSTILE_LINES))

    srv = ScriptedServer(script)
    status, lines, _ = pipe_client(srv.port).finish(close_stdin=False)  # stdin stays open
    srv.stop()
    out = "\n".join(lines)
    for bad in FORBIDDEN:
        assert bad not in out, (bad, out)
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", out)
    lines = out.splitlines()
    assert "evil: clear[2Jscreen" in lines
    assert "evil: set ]0;titlethe title" in lines
    assert "evil: bidi reversed isolate" in lines
    assert lines[-1] == "Connection closed by server"
    assert status == 1


def test_every_line_before_a_close_is_printed_before_the_last_line(pipe_client):
    count = 2000

    def script(srv: ScriptedServer, conn: socket.socket) -> None:
        conn.sendall(b"".join(b"x: line %d\n" % i for i in range(count)) + b"no newline at the end")

    srv = ScriptedServer(script)
    status, lines, _ = pipe_client(srv.port).finish(close_stdin=False)
    srv.stop()
    assert lines[1:-2] == [f"x: line {i}" for i in range(count)]
    assert lines[-2:] == ["no newline at the end", "Connection closed by server"]
    assert status == 1


def test_lines_sent_after_exit_are_shown_and_exit_is_not_a_server_close():
    def script(srv: ScriptedServer, conn: socket.socket) -> None:
        conn.sendall(b"*** Welcome, 1! You are in lobby. Type /help for commands.\n")
        srv.read_until(conn, b"exit\n")
        conn.sendall(b"".join(b"late: %d\n" % i for i in range(300)))

    srv = ScriptedServer(script)
    done = run_client(srv.port, "one\ntwo\nexit\nthree\n")
    srv.stop()
    lines = done.stdout.decode().splitlines()
    assert srv.received == b"one\ntwo\nexit\n"
    assert lines[-301:-1] == [f"late: {i}" for i in range(300)]
    assert lines[-1] == "Disconnected from server"
    assert "Connection closed by server" not in lines
    assert done.returncode == 0


def test_end_of_input_waits_only_briefly_for_a_server_that_stays():
    def script(srv: ScriptedServer, conn: socket.socket) -> None:
        srv.read_until(conn, b"exit\n")
        srv.release.wait(WAIT)  # does not close until the client has gone

    srv = ScriptedServer(script)
    started = time.monotonic()
    done = run_client(srv.port, "/nick x\n", "--room", "r1")
    took = time.monotonic() - started
    srv.release.set()
    srv.stop()
    assert done.returncode == 0
    assert done.stdout.decode().splitlines()[-1] == "Disconnected from server"
    assert srv.received == b"/join r1\n/nick x\nexit\n"
    assert took < client.LEAVE_TIMEOUT + 3


# ------------------------------------------------------------- terminal formatting


def render(fragments) -> str:
    """What prompt_toolkit writes to a VT100 terminal for these fragments."""
    from prompt_toolkit.formatted_text import FormattedText
    from prompt_toolkit.output.color_depth import ColorDepth
    from prompt_toolkit.output.vt100 import Vt100_Output
    from prompt_toolkit.renderer import print_formatted_text

    from geventchat.client.ui import STYLE

    stream = io.StringIO()
    output = Vt100_Output(stream, lambda: None, term="xterm-256color")
    print_formatted_text(output, FormattedText(fragments), STYLE, color_depth=ColorDepth.DEPTH_24_BIT)
    output.flush()
    return stream.getvalue()


def test_terminal_rendering_of_hostile_lines_holds_only_colour_codes():
    for raw in HOSTILE_LINES:
        text = protocol.decode_line(raw.rstrip(b"\n"))
        fragments = format_line(text)
        for _, piece, *_ in fragments:
            assert not re.search(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", piece)
        written = render(fragments)
        # Only SGR (colour) sequences may remain, and they are ours.
        stripped = re.sub(r"\x1b\[[0-9;]*m|\x1b\[\?7h", "", written)
        assert not re.search(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", stripped), (raw, written)


def test_line_kinds_are_styled_apart_and_nick_colours_are_stable():
    kinds = {}
    for line in ("ann: hi", "* ann waves", "*ann* psst", "*** notice", "*** Error: no", "plain"):
        styles = [style for style, _ in format_line(line, now=0)[1:]]
        kinds[line] = tuple(styles)
    assert len(set(kinds.values())) == len(kinds)
    assert nick_style("Ann") == nick_style("ann") == nick_style("ANN")
    assert len({nick_style(n) for n in ("ann", "bob", "cy", "dee", "eve", "fay", "gus")}) > 2
    assert "".join(piece for _, piece in format_line("ann: hi", now=0)).endswith("ann: hi")
    # A chat line naming the client's own nick (as a whole word) stands out.
    assert format_line("ann: hi Bob!", me="bob")[-1][0] == "class:mention"
    assert format_line("ann: hi bobby", me="bob")[-1][0] == ""
    assert format_line("ann: hi bob", me="")[-1][0] == ""


def test_completion_of_commands_and_seen_nicknames():
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    state = ChatState()
    for line in (
        "*** Welcome, me! You are in lobby. Type /help for commands.",
        "Alice: hi",
        "* bob waves",
        "*** carol joined lobby",
        "*** dave joined lobby",
        "*** dave quit",
        "*** bob is now known as Bobby",
        "evil\x1b: x",
        "*** You are now known as me2",
    ):
        state.see(protocol.terminal_safe(line))
    assert state.me == "me2" and state.room == "lobby"
    assert sorted(state.nicks.values()) == ["Alice", "Bobby", "carol", "evil"]
    completer = ChatCompleter(state)

    def complete(text: str) -> list[str]:
        return [c.text for c in completer.get_completions(Document(text), CompleteEvent(completion_requested=True))]

    assert complete("/j") == ["/join "]
    assert sorted(complete("/M")) == ["/me ", "/msg "]
    assert len(complete("/")) == len(protocol.COMMAND_SPECS)
    assert complete("hi al") == ["Alice"]
    assert complete("@al") == ["Alice"] and complete("(car") == ["carol"]
    assert complete("/msg b") == ["Bobby"]
    assert complete("hi ") == []
    assert complete("hi zz") == []


def test_a_huge_stdin_line_is_passed_on_whole_not_held():
    huge = b"x" * (client.MAX_SERVER_LINE * 3) + b"exit"  # not a leave: it is part of a long line
    sent = b"a\n" + huge + b"\nb\n" + b"z" * (client.MAX_SERVER_LINE + 10)  # the last line has no "\n"

    def script(srv: ScriptedServer, conn: socket.socket) -> None:
        srv.read_until(conn, b"\nexit\n")

    srv = ScriptedServer(script)
    done = run_client(srv.port, sent.decode())
    srv.stop()
    assert srv.received == sent + b"\nexit\n"
    assert done.returncode == 0
    assert done.stdout.decode().splitlines()[-1] == "Disconnected from server"


# ------------------------------------------------------------------ the wrong server


def start_web_server() -> tuple[subprocess.Popen, int, int]:
    """``python -m geventchat.server --web-port 0``: (process, chat port, web port)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "geventchat.server", "--host", "127.0.0.1", "--port", "0", "--web-port", "0"],
        cwd=ROOT,
        env=ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    chat = web = 0
    deadline = time.monotonic() + 15
    while not (chat and web) and time.monotonic() < deadline:
        line = proc.stdout.readline().decode()  # type: ignore[union-attr]
        if not line:
            break
        match = re.search(r"(Server listening on |Web client on http://)127\.0\.0\.1:(\d+)", line)
        if match:
            if match.group(1).startswith("Server"):
                chat = int(match.group(2))
            else:
                web = int(match.group(2))
    if not (chat and web):
        proc.kill()
        proc.wait(timeout=5)
        raise RuntimeError("the server did not start with --web-port")
    return proc, chat, web


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_pointed_at_the_web_port_it_says_so(pipe_client):
    """A web port says nothing until it has a request: the client says, once, that no
    welcome came (on stderr; stdout stays the chat's), instead of waiting in silence."""
    proc, _chat, web = start_web_server()
    try:
        pipe = pipe_client(web)
        pipe.expect(CONNECTED_RE.pattern)
        assert client.WELCOME_WAIT == 5.0
        hint = b""
        while b"\n" not in hint:  # (bounded: the stderr pipe ends when the client does)
            chunk = pipe.proc.stderr.read1(4096)  # type: ignore[union-attr]
            assert chunk, hint
            hint += chunk
        assert hint.decode() == (
            f"*** No welcome from 127.0.0.1:{web} after 5 s: is it the chat port? "
            "(a web port speaks HTTP, a TLS chat port needs --tls)\n"
        )
        pipe.write("exit\n")
        status, lines, err = pipe.finish()
        assert status == 0 and lines[-1] == "Disconnected from server", lines
        assert err == ""
    finally:
        stop_process(proc)


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", "answers in HTTP: it is a web port"),
        (b":irc.example.net NOTICE * :*** Looking up your hostname...\r\n", "speaks IRC: it is an IRC port"),
    ],
)
def test_a_server_answering_in_another_protocol_is_one_line_and_exit_2(pipe_client, reply, said):
    def script(srv: ScriptedServer, conn: socket.socket) -> None:
        srv.read_until(conn, b"\n")  # the client's /nick
        conn.sendall(reply)
        srv.release.wait(WAIT)

    srv = ScriptedServer(script)
    try:
        status, lines, err = pipe_client(srv.port, "--nick", "bob").finish(close_stdin=False)
    finally:
        srv.release.set()
        srv.stop()
    assert status == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"Error: 127.0.0.1:{srv.port} {said}") and "not the chat port" in err, err
    assert lines == [f"Connected to chat server at 127.0.0.1:{srv.port}. Type 'exit' to leave."]  # nothing of it shown


def test_the_piped_client_prints_a_replay_block_as_received(pipe_client):
    block = [
        "*** Welcome, 4242! You are in lobby. Type /help for commands.",
        "*** Recent messages in lobby (2):",
        "*** [2026-01-02 03:04:05] ann: from before",
        "*** [2026-01-02 03:05:06] * ann waved",
        "*** End of recent messages",
        "bob: live",
    ]

    def script(srv: ScriptedServer, conn: socket.socket) -> None:
        conn.sendall("".join(line + "\n" for line in block).encode())

    srv = ScriptedServer(script)
    status, lines, _ = pipe_client(srv.port).finish(close_stdin=False)
    srv.stop()
    assert lines[1 : 1 + len(block)] == block  # after the "Connected to" line, verbatim, in UTC
    assert status == 1
