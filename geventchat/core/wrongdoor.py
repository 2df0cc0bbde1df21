"""Wrong door: a connection to the chat port that opens with another protocol's first lines.

A browser pointed at the chat port sends an HTTP request (request line, then headers with
its cookies); an IRC client sends its registration (``CAP LS 302``, ``PASS``, ``NICK``,
``USER``). Read as chat, every one of those lines would be relayed to the whole room. The
door looks at the first complete line(s) of a connection with :func:`wrong_door` and,
when it names another protocol, sends :func:`wrong_door_error` and closes, relaying
nothing.

What counts (commands in capitals, as clients send them; a person typing in lower case is
never taken for a client):

* HTTP: a request line, ``METHOD TARGET HTTP/x.y`` with any method (``GET``, ``POST``,
  ``PRI`` of HTTP/2's preface...).
* IRC: ``CAP LS|REQ|END|LIST ...``, ``PASS secret``, ``USER name mode unused :real name``;
  and ``NICK name`` when the very next line, received with it, is such a ``USER`` (old
  clients and bots start with NICK; a ``NICK name`` line alone is a chat line like any).

Sans-IO: strings in, an answer out; the door does the rest.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from geventchat.core import protocol

HTTP = "HTTP"
IRC = "IRC"

_HTTP_REQUEST_RE = re.compile(r"[A-Z][A-Z_-]{1,19} \S+ HTTP/\d(?:\.\d)?")
# USER's last parameter (the real name) begins with ":" as clients send it; without one, a
# single word after "*" (so that "USER guide is on the wiki" stays a chat line).
_IRC_USER = r"USER \S+ \S+ \S+ :.*|USER \S+ \S+ \* \S+"
_IRC_OPENING_RE = re.compile(r"CAP (?:LS|REQ|END|LIST)(?: .*)?|PASS :?\S+|" + _IRC_USER)
_IRC_USER_RE = re.compile(_IRC_USER)
_IRC_NICK_RE = re.compile(r"NICK :?\S+")


def wrong_door(first_lines: Sequence[protocol.FramerEvent]) -> str | None:
    """``HTTP`` or ``IRC`` when a connection's first lines open that protocol, else None.

    ``first_lines``: the first complete lines the connection sent, in order, as the framer
    gave them (one is enough; a second is looked at only after a bare ``NICK``)."""
    if not first_lines:
        return None
    first = first_lines[0]
    if not isinstance(first, str):
        return None  # a line too long: no protocol's opening
    if _HTTP_REQUEST_RE.fullmatch(first):
        return HTTP
    if _IRC_OPENING_RE.fullmatch(first):
        return IRC
    if _IRC_NICK_RE.fullmatch(first) and len(first_lines) > 1:
        second = first_lines[1]
        if isinstance(second, str) and _IRC_USER_RE.fullmatch(second):
            return IRC
    return None


@dataclass(frozen=True, slots=True)
class WrongDoor:
    """Framer event: the connection opened with another protocol (``kind``: HTTP or IRC)."""

    kind: str


class FirstLinesCheck:
    """A framer whose first complete lines are checked for another protocol's opening.

    Wraps the door's framer: the first ``receive_data`` that completes a line returns
    either its events, unchanged, or ``[WrongDoor(kind)]`` alone (none of the lines). From
    then on ``receive_data`` is the wrapped framer's own method: the relay's hot path pays
    nothing for the check."""

    def __init__(self, framer: protocol.LineFramer) -> None:
        self.framer = framer

    @property
    def buffered(self) -> int:
        return self.framer.buffered

    @property
    def in_line(self) -> bool:
        return self.framer.in_line

    def receive_data(self, data: bytes) -> list[protocol.FramerEvent | WrongDoor]:
        events = self.framer.receive_data(data)
        if not events:
            return []
        self.receive_data = self.framer.receive_data  # type: ignore[method-assign,assignment]  # checked once
        kind = wrong_door(events)
        return [*events] if kind is None else [WrongDoor(kind)]


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def wrong_door_error(
    kind: str,
    host: str,
    *,
    web_port: int | None = None,
    web_scheme: str = "http",
    irc_port: int | None = None,
) -> bytes:
    """The one ``*** Error:`` line a wrong-door connection gets before it is closed.

    ``host``: the address the client reached (so that the URL it is told works for it);
    ``web_port``/``irc_port``: the server's other doors, None when not open."""
    doors = []
    if web_port is not None:
        doors.append(f"the web page is at {web_scheme}://{_where(host, web_port)}/")
    if irc_port is not None:
        doors.append(f"IRC clients connect to port {irc_port}")
    if kind == IRC:
        doors.reverse()  # the door this client was looking for first
    if doors:
        there = "; ".join(doors)
    else:
        there = "this server has no web page or IRC port open"
    return protocol.error(
        f"this is the chat port, for plain text lines (nc, telnet, python -m geventchat), not {kind}; {there}. Closing."
    )


# How the console and the others in the room are told why the connection ended.
def drop_reason(kind: str) -> str:
    return f"wrong door: {kind} on the chat port"
