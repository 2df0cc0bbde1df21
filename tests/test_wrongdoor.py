"""Wrong door (contract §3): HTTP request lines and IRC registration on the chat port are
never relayed; the client gets one ``*** Error:`` line naming the right door, then EOF.

The sans-IO check (``core/wrongdoor.py``) line by line, then the real server over sockets:
a browser's request sent at once and a byte at a time, IRC clients' openings, and the
server's other doors named in the line. (The welcome goes out at connect, before the
client says anything: the turned-away client may get it before the error line, and the
room sees a short visit, joined and quit; nothing the client sent.)
"""

from __future__ import annotations

import socket
import time

import pytest
from conftest import HOST, WAIT, ChatClient

from geventchat.core import wrongdoor
from geventchat.core.protocol import LineFramer, LineTooLong

pytestmark = pytest.mark.timeout(60)

BROWSER_REQUEST = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:12345\r\nUser-Agent: Mozilla/5.0\r\n"
    b"Cookie: session=SECRET-COOKIE\r\nAccept: text/html\r\n\r\n"
)
IRC_OPENINGS = {
    "cap": b"CAP LS 302\r\nNICK alice\r\nUSER alice 0 * :Alice Example\r\n",
    "pass": b"PASS SECRET-PASSWORD\r\nNICK alice\r\nUSER alice 0 * :Alice Example\r\n",
    "user": b"USER alice 0 * :Alice Example\r\nNICK alice\r\n",
    "nick-then-user": b"NICK alice\r\nUSER alice 0 * :Alice Example\r\n",
}


# ------------------------------------------------------------------------ sans-IO


@pytest.mark.parametrize(
    "line",
    [
        "GET / HTTP/1.1",
        "POST /login HTTP/1.0",
        "HEAD /favicon.ico HTTP/1.1",
        "OPTIONS * HTTP/1.1",
        "PRI * HTTP/2.0",
        "GET /ws?x=1 HTTP/1.1",
    ],
)
def test_http_request_lines(line):
    assert wrongdoor.wrong_door([line]) == wrongdoor.HTTP


@pytest.mark.parametrize(
    "lines",
    [
        ["CAP LS"],
        ["CAP LS 302"],
        ["CAP REQ :sasl"],
        ["CAP END"],
        ["PASS secret"],
        ["PASS :secret"],
        ["USER alice 0 * :Alice Example"],
        ["USER ~bot 8 * bot"],
        ["NICK alice", "USER alice 0 * :Alice"],
    ],
)
def test_irc_registration(lines):
    assert wrongdoor.wrong_door(lines) == wrongdoor.IRC


@pytest.mark.parametrize(
    "lines",
    [
        [],
        [""],
        ["hello everyone"],
        ["get / http/1.1"],  # people type in lower case; clients do not
        ["GET me a coffee"],
        ["I GET / HTTP/1.1"],
        ["cap ls"],
        ["pass the salt please"],
        ["PASS the salt please"],
        ["USER guide is on the wiki"],
        ["NICK alice"],  # alone: a chat line like any (the next line decides nothing later)
        ["NICK alice", "hello"],
        ["hello", "GET / HTTP/1.1"],  # only the first line counts
        [LineTooLong(9999), "GET / HTTP/1.1"],
        ["/nick alice"],
    ],
)
def test_chat_lines_are_not_another_protocol(lines):
    assert wrongdoor.wrong_door(lines) is None


def _one_byte_at_a_time(framer, data: bytes) -> list:
    events = []
    for i in range(len(data)):
        events += framer.receive_data(data[i : i + 1])
    return events


def _first_events(framer, data: bytes, *, step: int) -> list:
    """The first non-empty answer of the framer when fed ``data`` ``step`` bytes at a time
    (the door acts on it; after a WrongDoor it reads no more)."""
    for i in range(0, len(data), step):
        events = framer.receive_data(data[i : i + step])
        if events:
            return events
    return []


@pytest.mark.parametrize(
    ("data", "kind"),
    [(BROWSER_REQUEST, wrongdoor.HTTP)]
    + [(opening, wrongdoor.IRC) for opening in IRC_OPENINGS.values() if not opening.startswith(b"NICK")],
)
def test_framer_check_gives_no_line_of_another_protocol(data, kind):
    for step in (len(data), 1, 7):
        assert _first_events(wrongdoor.FirstLinesCheck(LineFramer()), data, step=step) == [wrongdoor.WrongDoor(kind)]


def test_framer_check_nick_then_user_in_one_piece():
    data = IRC_OPENINGS["nick-then-user"]
    assert wrongdoor.FirstLinesCheck(LineFramer()).receive_data(data) == [wrongdoor.WrongDoor(wrongdoor.IRC)]
    # A NICK line that arrives alone is a chat line: the check is over once a line came.
    assert _one_byte_at_a_time(wrongdoor.FirstLinesCheck(LineFramer()), data) == ["NICK alice", "USER alice 0 * :Alice Example"]


def test_framer_check_passes_chat_through_and_checks_once():
    framer = wrongdoor.FirstLinesCheck(LineFramer())
    assert framer.receive_data(b"hel") == []
    assert framer.buffered == 3 and framer.in_line
    assert framer.receive_data(b"lo\nGET / HT") == ["hello"]
    assert framer.receive_data(b"TP/1.1\n") == ["GET / HTTP/1.1"]  # not the first line: chat
    assert not framer.in_line


def test_error_names_the_open_doors():
    line = wrongdoor.wrong_door_error(wrongdoor.HTTP, "127.0.0.1", web_port=8080, irc_port=6667).decode()
    assert line.startswith("*** Error: this is the chat port") and line.endswith("\n") and line.count("\n") == 1
    assert "not HTTP" in line
    assert line.index("http://127.0.0.1:8080/") < line.index("port 6667")  # the web page first for a browser
    irc = wrongdoor.wrong_door_error(wrongdoor.IRC, "::1", web_port=8080, web_scheme="https", irc_port=6667).decode()
    assert "not IRC" in irc and irc.index("port 6667") < irc.index("https://[::1]:8080/")
    none = wrongdoor.wrong_door_error(wrongdoor.HTTP, "127.0.0.1").decode()
    assert "no web page or IRC port open" in none


# ------------------------------------------------------------------- the real server


def _knock(port: int, data: bytes, *, byte_by_byte: bool = False) -> list[str]:
    """Send ``data`` on a new connection to the chat port; every line received until EOF."""
    sock = socket.create_connection((HOST, port), timeout=WAIT)
    try:
        if byte_by_byte:
            for i in range(len(data)):
                sock.sendall(data[i : i + 1])
                time.sleep(0.001)
        else:
            sock.sendall(data)
        received = b""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        else:
            raise AssertionError(f"not closed within {WAIT}s; got {received!r}")
    finally:
        sock.close()
    return received.decode().splitlines()


def _assert_turned_away(lines: list[str], kind: str) -> str:
    errors = [line for line in lines if line.startswith("*** Error:")]
    assert len(errors) == 1, lines
    assert errors[0] == lines[-1], lines  # the last line, then the close
    assert "this is the chat port" in errors[0] and f"not {kind}" in errors[0], errors[0]
    for line in lines[:-1]:  # a welcome (and its room) at most, nothing else
        assert line.startswith("*** "), lines
    return errors[0]


def _assert_nothing_relayed(watcher: ChatClient, *secrets: str) -> None:
    """The watcher got no line of the request (presence lines of the visitor at most)."""
    seen = watcher.sync()
    for line in seen:
        assert line.startswith("*** "), seen
        for secret in secrets:
            assert secret not in line, seen


@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["at-once", "byte-by-byte"])
def test_browser_request_is_not_relayed(server, clients, byte_by_byte):
    watcher = clients(server)
    lines = _knock(server.port, BROWSER_REQUEST, byte_by_byte=byte_by_byte)
    error = _assert_turned_away(lines, "HTTP")
    assert "no web page or IRC port open" in error
    _assert_nothing_relayed(watcher, "GET", "Cookie", "SECRET-COOKIE", "Mozilla")
    server.wait_for(lambda line: "disconnected (wrong door: HTTP on the chat port)" in line)


@pytest.mark.parametrize("opening", sorted(IRC_OPENINGS))
def test_irc_registration_is_not_relayed(server, clients, opening):
    watcher = clients(server)
    lines = _knock(server.port, IRC_OPENINGS[opening])
    _assert_turned_away(lines, "IRC")
    _assert_nothing_relayed(watcher, "CAP", "USER", "NICK alice", "SECRET-PASSWORD", "Alice Example")


def test_error_names_the_web_port(start_server, clients):
    server = start_server("--web-port", "0")
    web_line = server.wait_for(lambda line: "Web client on " in line)
    url = web_line.split("Web client on ", 1)[1]
    lines = _knock(server.port, BROWSER_REQUEST)
    error = _assert_turned_away(lines, "HTTP")
    assert f"the web page is at {url}" in error, (error, url)


def test_chat_that_looks_alike_is_relayed(server, clients):
    a = clients(server)
    b = clients(server)
    a.expect(f"*** {b.nick} joined lobby")
    b.send("NICK alice", "GET / HTTP/1.1")  # a lone NICK first: chat, and so is what follows
    a.expect(f"{b.nick}: NICK alice", f"{b.nick}: GET / HTTP/1.1")


def test_error_names_the_irc_port_first_to_an_irc_client(start_server):
    server = start_server("--web-port", "0", "--irc-port", "0")
    irc_line = server.wait_for(lambda line: "IRC listening on " in line)
    irc_port = int(irc_line.rsplit(":", 1)[1])
    error = _assert_turned_away(_knock(server.port, IRC_OPENINGS["cap"]), "IRC")
    assert f"IRC clients connect to port {irc_port}; the web page is at http://127.0.0.1:" in error, error
