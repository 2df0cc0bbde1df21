"""What the hub tells members, once per door type: an ``Event`` and its encodings.

The hub describes what happened (chat in a room, an action, a join, a part, a quit, a
rename, a private message) as one ``Event``; each member type reads it in its own wire
format. A room keeps its members grouped by *encoding* (``"line"`` for the line and
WebSocket doors, ``"irc"`` and ``"irc-time"`` for IRC clients without and with the
``server-time`` capability), and a relay encodes the event once per group, not once per
recipient: the same bytes object goes to every member of the group. An event caches
its encodings, so a quit shown in several rooms is encoded once.

A line member sees ``NICK: text``; an IRC member sees ``:NICK!user@host PRIVMSG #ROOM :text``
(room R is channel ``#R``, always; a long line is split into PRIVMSGs within 512 bytes).

Between server processes (``cluster``) an event travels as ``to_bus()`` bytes: its fields
joined by ``\\x1d`` (sanitised text holds no C0 control), rebuilt by ``from_bus``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from geventchat.core import irc, protocol

# Kinds. Room events: CHAT (texts), NOTICE (an IRC channel NOTICE: line users see it as
# chat), ACTION, JOIN, PART (reason), QUIT (reason), NICK (target = the new nick).
# Private (to the member ``target``): PRIVATE, PRIVATE_NOTICE, PRIVATE_ACTION.
# RAW: bytes of the line protocol for line members only (what older callers hand the hub).
CHAT, NOTICE, ACTION, JOIN, PART, QUIT, NICK = "C", "N", "A", "J", "P", "Q", "K"
PRIVATE, PRIVATE_NOTICE, PRIVATE_ACTION, RAW = "M", "O", "B", "R"
PRESENCE = frozenset((JOIN, PART, QUIT, NICK))

# The host part of every IRC source: never a user's address.
HOST = "geventchat"
SERVER_NAME = "geventchat"

_SEP = "\x1d"


class Event:
    __slots__ = ("kind", "nick", "user", "room", "texts", "target", "time", "raw", "_cache")

    def __init__(
        self,
        kind: str,
        nick: str = "",
        user: str = "line",
        room: str = "",
        texts: tuple[str, ...] | list[str] = (),
        target: str = "",
        when: float | None = None,
        raw: bytes = b"",
    ) -> None:
        self.kind = kind
        self.nick = nick  # who did it
        self.user = user  # its IRC user name (the door's name for line and web users)
        self.room = room  # the room's name as shown (room events)
        self.texts = texts  # CHAT: several lines in order; others: one (the reason for PART/QUIT)
        self.target = target  # NICK: the new nick; private kinds: the recipient's nick
        self.time = time.time() if when is None else when
        self.raw = raw
        self._cache: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"<Event {self.kind} {self.nick} {self.room} {self.texts!r} {self.target}>"

    def encoded(self, encoding: str) -> bytes:
        data = self._cache.get(encoding)
        if data is None:
            data = self._cache[encoding] = ENCODERS[encoding](self)
        return data

    @property
    def source(self) -> str:
        return f"{self.nick}!{self.user}@{HOST}"

    # ----------------------------------------------------------------- the bus

    def to_bus(self) -> bytes:
        if self.kind == RAW:
            return b"R" + _SEP.encode() + self.raw
        fields = (self.kind, self.nick, self.user, self.room, self.target, repr(self.time), *self.texts)
        return _SEP.join(fields).encode()

    @classmethod
    def from_bus(cls, data: bytes) -> Event:
        if data[:2] == b"R\x1d":
            return cls(RAW, raw=data[2:])
        kind, nick, user, room, target, when, *texts = data.decode().split(_SEP)
        return cls(kind, nick, user, room, tuple(texts), target, float(when))


def raw(data: bytes) -> Event:
    return Event(RAW, raw=data)


def channel(room: str) -> str:
    """Room ``R`` as an IRC channel: ``#R``, always (``lobby`` -> ``#lobby``, ``#dev`` -> ``##dev``)."""
    return "#" + room


# --------------------------------------------------------------------- encoders


def encode_line(event: Event) -> bytes:
    kind, nick = event.kind, event.nick
    if kind == CHAT or kind == NOTICE:
        texts = event.texts
        if len(texts) == 1:
            return protocol.chat_line(nick, texts[0])
        return protocol.chat_lines(nick, texts)
    if kind == ACTION:
        return protocol.action_line(nick, event.texts[0])
    if kind == PRIVATE or kind == PRIVATE_NOTICE:
        return protocol.private_line(nick, event.texts[0])
    if kind == PRIVATE_ACTION:
        return protocol.private_line(nick, f"* {nick} {event.texts[0]}")
    if kind == JOIN:
        return protocol.joined(nick, event.room)
    if kind == PART:
        return protocol.left(nick, event.room)
    if kind == QUIT:
        return protocol.quit_line(nick, event.texts[0] if event.texts else "")
    if kind == NICK:
        return protocol.renamed(nick, event.target)
    return event.raw


def encode_line_quiet(event: Event) -> bytes:
    """For a hub started with ``--no-presence``: line members get no presence lines."""
    return b"" if event.kind in PRESENCE else encode_line(event)


def _privmsgs(
    source: str, command: str, target: str, texts: tuple[str, ...] | list[str], wrap: Callable[[str], str] | None = None
) -> bytes:
    head = f":{source} {command} {target} :"
    # Bytes left for the text within 512 with "\r\n" (the head is ASCII: names are): a
    # text of at most budget/4 characters always fits, whatever its characters.
    budget = irc.MAX_LINE - 2 - len(head) - (len(wrap("")) if wrap is not None else 0)
    quick = budget // 4
    if wrap is None and len(texts) == 1 and len(texts[0]) <= quick:
        return f"{head}{texts[0]}\r\n".encode()
    out = []
    for text in texts:
        for piece in irc.split_text(text, budget) if len(text) > quick else (text,):
            out.append(f"{head}{wrap(piece) if wrap else piece}\r\n")
    return "".join(out).encode()


def encode_irc(event: Event) -> bytes:
    kind = event.kind
    if kind == CHAT:
        return _privmsgs(event.source, "PRIVMSG", "#" + event.room, event.texts)
    if kind == NOTICE:
        return _privmsgs(event.source, "NOTICE", "#" + event.room, event.texts)
    if kind == ACTION:
        return _privmsgs(event.source, "PRIVMSG", "#" + event.room, event.texts, irc.action)
    if kind == PRIVATE:
        return _privmsgs(event.source, "PRIVMSG", event.target, event.texts)
    if kind == PRIVATE_NOTICE:
        return _privmsgs(event.source, "NOTICE", event.target, event.texts)
    if kind == PRIVATE_ACTION:
        return _privmsgs(event.source, "PRIVMSG", event.target, event.texts, irc.action)
    if kind == JOIN:
        return f":{event.source} JOIN #{event.room}\r\n".encode()
    if kind == PART:
        reason = f" :{event.texts[0]}" if event.texts and event.texts[0] else ""
        return f":{event.source} PART #{event.room}{reason}\r\n".encode()
    if kind == QUIT:
        reason = f"Quit: {event.texts[0]}" if event.texts and event.texts[0] else "Quit"
        return f":{event.source} QUIT :{reason}\r\n".encode()
    if kind == NICK:
        return f":{event.source} NICK {event.target}\r\n".encode()
    return b""  # RAW: the line protocol's own lines are not for IRC clients


def server_time(when: float) -> str:
    """An IRCv3 ``server-time`` value: UTC, milliseconds, ``Z``."""
    seconds = int(when)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((when - seconds) * 1000):03d}Z"


def encode_irc_time(event: Event) -> bytes:
    """As ``encode_irc``, each line tagged with the time the server relayed it."""
    plain = event.encoded("irc")
    if not plain:
        return plain
    tag = f"@time={server_time(event.time)} ".encode()
    return b"".join(tag + line + b"\r\n" for line in plain.split(b"\r\n")[:-1])


ENCODERS: dict[str, Callable[[Event], bytes]] = {
    "line": encode_line,
    "line-quiet": encode_line_quiet,
    "irc": encode_irc,
    "irc-time": encode_irc_time,
}
