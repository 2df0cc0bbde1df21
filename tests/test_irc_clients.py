"""Real IRC clients end to end: irssi and WeeChat (Debian packages) in tmux.

Each runs in a tmux pane with a throwaway home directory (irssi: a config the test writes;
WeeChat: its server added by start-up commands), connects to the server's IRC port on
127.0.0.1, joins #lobby and chats; the test types with send-keys and reads the screen
with capture-pane. Against geventchat (--irc-port) the
other party is a plain socket user on the chat port, as `nc` would be; against ngircd (the
reference for what a real IRC server does) it is a plain socket speaking IRC.

Without irssi or WeeChat (or tmux) these tests are skipped, unless GEVENTCHAT_REQUIRE_IRC is set
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

TMUX = shutil.which("tmux")
WAIT = 15.0
IRC_LISTENING_RE = re.compile(r"IRC listening on 127\.0\.0\.1:(\d+)")
# the Debian package of each client (.ci/run installs them)
PACKAGES = {"irssi": "irssi", "weechat": "weechat-curses"}


def require(*binaries: str) -> None:
    missing = [name for name in binaries if shutil.which(name) is None]
    if missing:
        reason = (
            f"{' and '.join(missing)} not installed (Debian: apt-get install {' '.join(PACKAGES.get(m, m) for m in missing)})"
        )
        if os.environ.get("GEVENTCHAT_REQUIRE_IRC"):
            pytest.fail(f"{reason}; GEVENTCHAT_REQUIRE_IRC is set")
        pytest.skip(reason)


IRSSI_CONFIG = """\
settings = {
  core = {
    real_name = "irssi in a test";
    user_name = "%(nick)s";
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


class TerminalIrcClient:
    """A real IRC client in its own tmux server, connected to 127.0.0.1:port as nick."""

    name = ""

    def __init__(self, home: Path, port: int, nick: str) -> None:
        require(self.name, "tmux")
        home.mkdir(parents=True, exist_ok=True)
        self.nick = nick
        self.tmux = Tmux(self.command(home, port, nick))

    def command(self, home: Path, port: int, nick: str) -> str:
        raise NotImplementedError

    def type_line(self, text: str) -> None:
        self.tmux.keys(text)
        self.tmux.press("Enter")

    def wait_line(self, pattern: str, timeout: float = WAIT) -> str:
        """The first screen line matching a regular expression, polling until timeout."""
        regex = re.compile(pattern)
        lines = self.tmux.wait_screen(lambda ls: any(regex.search(line) for line in ls), repr(pattern), timeout)
        return next(line for line in lines if regex.search(line))

    def join_lobby(self) -> None:
        raise NotImplementedError

    def wait_chat(self, nick: str, text: str) -> str:
        """The screen line that shows nick's chat line text in the channel."""
        raise NotImplementedError

    def close(self) -> None:
        self.tmux.kill()


class Irssi(TerminalIrcClient):
    name = "irssi"

    def command(self, home: Path, port: int, nick: str) -> str:
        (home / "config").write_text(IRSSI_CONFIG % {"nick": nick})
        return f"irssi --home={home} --connect=127.0.0.1 --port={port} --nick={nick}"

    def join_lobby(self) -> None:
        # The server's welcome (001) or its MOTD first: a /join typed earlier only gets
        # irssi's "Not connected to server".
        self.wait_line(r"-!- (Welcome|.*MOTD)")
        self.type_line("/join #lobby")
        self.wait_line(rf"{self.nick}.*has joined #lobby")

    def wait_chat(self, nick: str, text: str) -> str:
        return self.wait_line(rf"<.?{nick}> {re.escape(text)}")


class WeeChat(TerminalIrcClient):
    name = "weechat"

    def command(self, home: Path, port: int, nick: str) -> str:
        # --dir: a throwaway home; the server is added (plain TCP, -notls) and joined by
        # the commands WeeChat runs at start
        run = f"/server add test 127.0.0.1/{port} -notls -nicks={nick} -username={nick} -autojoin=#lobby;/connect test"
        return f"weechat --dir {home} --run-command '{run}'"

    def join_lobby(self) -> None:
        self.wait_line(rf"{self.nick} \(.*\) has joined #lobby")

    def wait_chat(self, nick: str, text: str) -> str:
        return self.wait_line(rf"{nick} [|\u2502] {re.escape(text)}")


CLIENTS = {"irssi": Irssi, "weechat": WeeChat}


@pytest.fixture(params=sorted(CLIENTS))
def irc_client(request, tmp_path):
    """Factory: irc_client(port, nick) -> a running irssi or WeeChat; closed at teardown."""
    started: list[TerminalIrcClient] = []

    def start(port: int, nick: str) -> TerminalIrcClient:
        client = CLIENTS[request.param](tmp_path / f"{request.param}-{nick}", port, nick)
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
def test_an_irc_client_and_a_socket_user_chat_in_lobby(start_server, irc_client):
    if not geventchat_has_irc_door():
        pytest.skip("geventchat has no --irc-port yet")
    server = start_server("--irc-port", "0")
    line = server.wait_for(lambda text: IRC_LISTENING_RE.search(text) is not None)
    irc_port = int(IRC_LISTENING_RE.search(line).group(1))

    nc = server.client()  # a raw socket on the chat port, as `nc 127.0.0.1 PORT` is
    nc.send("/nick ncuser")
    nc.until(lambda text: "ncuser" in text)

    client = irc_client(irc_port, "ircuser")
    client.join_lobby()
    client.wait_line(r"ncuser")  # the names of #lobby list the socket user

    client.type_line("hello from the irc client")
    nc.until(lambda text: text == "ircuser: hello from the irc client")

    nc.send("hello from nc")
    client.wait_chat("ncuser", "hello from nc")
    server.wait_for(lambda text: console_text(text, "ncuser: hello from nc"))


# ----------------------------------------------------------------------------- the reference


@pytest.mark.timeout(90)
def test_the_same_against_ngircd_the_reference(irc_client):
    """The same exchange with ngircd: what a real IRC server shows irssi, and a check that
    this harness (config, tmux, the screen patterns) works with a server known to be right."""
    from bench.servers import ServerProcess

    require("ngircd")
    server = ServerProcess("ngircd", protocol="irc").start()
    try:
        other = IrcSocket(server.port, "sockuser")
        other.send("JOIN #lobby")
        other.until(lambda line: " 366 " in line)
        client = irc_client(server.port, "ircuser")
        client.join_lobby()
        other.until(lambda line: line.startswith(":ircuser!") and "JOIN" in line)
        client.type_line("hello from the irc client")
        got = other.until(lambda line: "PRIVMSG #lobby" in line)
        assert re.fullmatch(r":ircuser!~?ircuser@\S+ PRIVMSG #lobby :hello from the irc client", got), got
        other.send("PRIVMSG #lobby :hello from the socket")
        client.wait_chat("sockuser", "hello from the socket")
        other.close()
    finally:
        server.stop()
