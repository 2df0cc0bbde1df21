"""A real IRC client end to end: irssi (the Debian package) in tmux.

irssi runs in a tmux pane with a throwaway home directory and a config the test writes,
connects to the server's IRC port on 127.0.0.1, joins #lobby and chats; the test types
with send-keys and reads the screen with capture-pane. Against geventchat (--irc-port) the
other party is a plain socket user on the chat port, as `nc` would be; against ngircd (the
reference for what a real IRC server does) it is a plain socket speaking IRC.

Without irssi (or tmux) these tests are skipped, unless GEVENTCHAT_REQUIRE_IRC is set
(.ci/run sets it): then they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(ROOT), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

from conftest import console_text  # noqa: E402
from test_client_tty import Tmux  # noqa: E402

IRSSI = shutil.which("irssi")
TMUX = shutil.which("tmux")
WAIT = 15.0
IRC_LISTENING_RE = re.compile(r"IRC listening on 127\.0\.0\.1:(\d+)")


@pytest.fixture(autouse=True)
def _require_irssi_and_tmux():
    missing = [name for name, path in (("irssi", IRSSI), ("tmux", TMUX)) if path is None]
    if missing:
        reason = f"{' and '.join(missing)} not installed (Debian: apt-get install {' '.join(missing)})"
        if os.environ.get("GEVENTCHAT_REQUIRE_IRC"):
            pytest.fail(f"{reason}; GEVENTCHAT_REQUIRE_IRC is set")
        pytest.skip(reason)


IRSSI_CONFIG = """\
settings = {
  core = {
    real_name = "irssi in a test";
    user_name = "irssiuser";
    nick = "%(nick)s";
    timestamp_format = "%%H:%%M";
    settings_autosave = "no";
    awaylog_file = "";
  };
  "fe-common/core" = {
    autolog = "no";
    beep_msg_level = "";
    show_names_on_join = "yes";
  };
  "irc/core" = { alternate_nick = ""; };
};
servers = ( );
"""


class Irssi:
    """irssi in its own tmux server, connected to 127.0.0.1:port as nick."""

    def __init__(self, home: Path, port: int, nick: str) -> None:
        home.mkdir(parents=True, exist_ok=True)
        (home / "config").write_text(IRSSI_CONFIG % {"nick": nick})
        command = f"{IRSSI} --home={home} --connect=127.0.0.1 --port={port} --nick={nick}"
        self.tmux = Tmux(command)

    def type_line(self, text: str) -> None:
        self.tmux.keys(text)
        self.tmux.press("Enter")

    def wait_line(self, pattern: str, timeout: float = WAIT) -> str:
        """The first screen line matching a regular expression, polling until timeout."""
        regex = re.compile(pattern)
        lines = self.tmux.wait_screen(lambda ls: any(regex.search(line) for line in ls), repr(pattern), timeout)
        return next(line for line in lines if regex.search(line))

    def wait_registered(self) -> None:
        """The server's welcome (001) or its MOTD shows: commands typed now reach it (a
        /join typed earlier only gets irssi's 'Not connected to server')."""
        self.wait_line(r"-!- (Welcome|.*MOTD)")

    def close(self) -> None:
        self.tmux.kill()


@pytest.fixture
def irssi_factory(tmp_path):
    started: list[Irssi] = []

    def start(port: int, nick: str) -> Irssi:
        client = Irssi(tmp_path / f"irssi-{nick}", port, nick)
        started.append(client)
        return client

    yield start
    for client in started:
        client.close()


class IrcSocket:
    """A plain socket speaking IRC by hand (the other party in the ngircd test)."""

    def __init__(self, port: int, nick: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.buf = b""
        self.send(f"NICK {nick}", f"USER {nick} 0 * :socket user")
        self.until(lambda line: " 001 " in line)

    def send(self, *lines: str) -> None:
        self.sock.sendall("".join(line + "\r\n" for line in lines).encode())

    def until(self, predicate, timeout: float = WAIT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buf:
                raw, self.buf = self.buf.split(b"\n", 1)
                line = raw.rstrip(b"\r").decode("utf-8", "replace")
                if line.startswith("PING "):
                    self.send("PONG " + line[5:])
                if predicate(line):
                    return line
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no such line before the timeout"
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed the connection"
            self.buf += chunk

    def close(self) -> None:
        self.sock.close()


# ----------------------------------------------------------------------------- geventchat


def geventchat_has_irc_door() -> bool:
    proc = subprocess.run([sys.executable, "-m", "geventchat.server", "--help"], capture_output=True, text=True, timeout=30)
    return "--irc-port" in proc.stdout


@pytest.mark.timeout(90)
def test_irssi_and_a_socket_user_chat_in_lobby(start_server, irssi_factory):
    if not geventchat_has_irc_door():
        pytest.skip("geventchat has no --irc-port yet")
    server = start_server("--irc-port", "0")
    line = server.wait_for(lambda text: IRC_LISTENING_RE.search(text) is not None)
    irc_port = int(IRC_LISTENING_RE.search(line).group(1))

    nc = server.client()  # a raw socket on the chat port, as `nc 127.0.0.1 PORT` is
    nc.send("/nick ncuser")
    nc.until(lambda text: "ncuser" in text)

    irssi = irssi_factory(irc_port, "irssiuser")
    irssi.wait_registered()
    irssi.type_line("/join #lobby")
    irssi.wait_line(r"irssiuser.*has joined #lobby")
    irssi.wait_line(r"ncuser")  # the names of #lobby list the socket user

    irssi.type_line("hello from irssi")
    nc.until(lambda text: text == "irssiuser: hello from irssi")

    nc.send("hello from nc")
    irssi.wait_line(r"<.?ncuser> hello from nc")
    server.wait_for(lambda text: console_text(text, "ncuser: hello from nc"))


# ----------------------------------------------------------------------------- the reference


@pytest.mark.timeout(90)
def test_irssi_against_ngircd_the_reference(irssi_factory):
    """The same exchange with ngircd: what a real IRC server shows irssi, and a check that
    this harness (config, tmux, the screen patterns) works with a server known to be right."""
    from bench.servers import ServerProcess

    if shutil.which("ngircd") is None and not os.path.exists("/usr/sbin/ngircd"):
        if os.environ.get("GEVENTCHAT_REQUIRE_IRC"):
            pytest.fail("ngircd is not installed (GEVENTCHAT_REQUIRE_IRC is set)")
        pytest.skip("ngircd is not installed")
    server = ServerProcess("ngircd", protocol="irc").start()
    try:
        other = IrcSocket(server.port, "sockuser")
        other.send("JOIN #lobby")
        other.until(lambda line: " 366 " in line)
        irssi = irssi_factory(server.port, "irssiuser")
        irssi.wait_registered()
        irssi.type_line("/join #lobby")
        irssi.wait_line(r"irssiuser.*has joined #lobby")
        other.until(lambda line: line.startswith(":irssiuser!") and "JOIN" in line)
        irssi.type_line("hello from irssi")
        got = other.until(lambda line: "PRIVMSG #lobby" in line)
        assert re.fullmatch(r":irssiuser!~?irssiuser@\S+ PRIVMSG #lobby :hello from irssi", got), got
        other.send("PRIVMSG #lobby :hello from the socket")
        irssi.wait_line(r"<.?sockuser> hello from the socket")
        other.close()
    finally:
        server.stop()
