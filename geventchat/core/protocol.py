"""The chat line protocol, sans-IO: bytes in, events out; replies out as bytes.

No sockets here (in the spirit of h11): the server, the benchmark, the WebSocket gateway
and the terminal client all share this one definition of the wire format.

Client to server, one UTF-8 line each (``\\n`` or ``\\r\\n``):

* text not starting with ``/`` is a chat message; ``//text`` is the chat message ``/text``
* ``exit`` alone, or ``/quit [reason]``, leaves
* ``/name args`` is a command (see ``COMMAND_SPECS``)

Server to client: ``NICK: text``, ``* NICK text``, ``*NICK* text``, ``*** text`` and
``*** Error: text``, each ending in ``\\n``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Union

from geventchat.core import limits

# --------------------------------------------------------------------------- sanitising

# C0 controls except TAB, DEL and the C1 controls. Removing ESC (and the C1 CSI) takes
# every terminal escape sequence's power away: what is left is printable text.
_CONTROL_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")

# What a terminal must never be handed: the controls above, TAB included (it moves the
# cursor), plus the Unicode bidirectional controls, which can make a line display
# differently from what it says (the "Trojan Source" trick).
_TERMINAL_UNSAFE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


# The bytes strip_controls would remove from ASCII text, and "\r" (a line's "\r" is
# stripped only before its "\n"): a chunk of input without any of them, all ASCII, is
# clean text line by line as it stands (LineFramer's fast path).
_ASCII_CONTROLS = bytes(c for c in range(32) if c not in (9, 10)) + b"\x7f"


def strip_controls(text: str) -> str:
    """Remove C0 (but TAB), DEL and C1 control characters from text to be relayed."""
    # isprintable() is a fast C scan that is true for nearly every chat line; only lines
    # that hold something unusual pay for the regex.
    if text.isprintable():
        return text
    return _CONTROL_RE.sub("", text)


def terminal_safe(text: str) -> str:
    """Text that can be written to a terminal without moving the cursor or changing it."""
    if text.isprintable():
        return text
    return _TERMINAL_UNSAFE_RE.sub("", text.replace("\t", " "))


def decode_line(raw: bytes) -> str:
    """One received line's bytes as clean text: bad UTF-8 replaced, controls removed."""
    return strip_controls(raw.decode("utf-8", "replace"))


# ----------------------------------------------------------------------------- framing


@dataclass(frozen=True, slots=True)
class LineTooLong:
    """A line longer than the limit arrived; it was discarded whole."""

    size: int  # bytes the line had (without its line ending)


# An event from the framer: a decoded, sanitised line (str) or LineTooLong. Lines are
# plain str rather than a wrapper object because they are the hot path of the relay.
FramerEvent = Union[str, LineTooLong]


class LineFramer:
    """Split a byte stream into lines, holding at most ``max_line + 1`` bytes of input.

    Feed it whatever the transport delivered, in pieces of any size; it returns the
    events that those bytes complete. A line longer than ``max_line`` (line ending not
    counted) is dropped as soon as it is known to be too long, and reported once its end
    arrives, so memory for partial input stays bounded however the bytes come.
    """

    __slots__ = ("max_line", "_partial", "_discarding", "_discarded", "_discarded_cr")

    def __init__(self, max_line: int = limits.MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        self.max_line = max_line
        self._partial = bytearray()  # the unfinished line, at most max_line + 1 bytes
        self._discarding = False  # inside a line already known to be too long
        self._discarded = 0  # bytes of that line seen so far
        self._discarded_cr = False  # the last of them was "\r" (not counted if "\n" follows)

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished line held right now."""
        return len(self._partial)

    @property
    def in_line(self) -> bool:
        """True while a line has begun and not yet ended (for the slow-line timeout)."""
        return bool(self._partial) or self._discarding

    def receive_data(self, data: bytes) -> list[FramerEvent]:
        events: list[FramerEvent] = []
        if self._discarding:
            newline = data.find(b"\n")
            if newline < 0:
                if data:
                    self._discarded += len(data)
                    self._discarded_cr = data[-1] == 13
                return events
            cr = data[newline - 1] == 13 if newline else self._discarded_cr
            events.append(LineTooLong(self._discarded + newline - cr))
            self._discarding = False
            data = data[newline + 1 :]
        elif self._partial:
            newline = data.find(b"\n")
            if newline < 0:
                self._hold(data)
                return events
            self._partial += data[:newline]
            first = bytes(self._partial)
            self._partial.clear()
            self._complete(first, events)
            data = data[newline + 1 :]
        if not data:
            return events
        if data.isascii() and len(data.translate(None, _ASCII_CONTROLS)) == len(data):
            # The usual chunk: ASCII without a control character but TAB and newlines.
            # Each line in it is already what decode_line would make of it: one decode,
            # one split (a chunk's C-speed scans instead of one isprintable() and one
            # decode per line), as long as no line in it is too long.
            texts = data.decode("ascii").split("\n")
            if len(data) <= self.max_line or max(map(len, texts)) <= self.max_line:
                rest = texts.pop()
                if rest:
                    self._partial += data[len(data) - len(rest) :]
                if events:
                    events += texts
                    return events
                return texts  # type: ignore[return-value]  # (lines are events)
        lines = data.split(b"\n")
        tail = lines.pop()
        for raw in lines:
            self._complete(raw, events)
        if tail:
            self._hold(tail)
        return events

    def _hold(self, data: bytes) -> None:
        """Keep an unfinished piece of a line, or start discarding once it is too long."""
        size = len(self._partial) + len(data)
        # One byte more than the limit is allowed: a "\r" whose "\n" has not come yet.
        if size > self.max_line + 1:
            self._partial.clear()
            self._discarding = True
            self._discarded = size
            self._discarded_cr = data[-1] == 13
        else:
            self._partial += data

    def _complete(self, raw: bytes, events: list[FramerEvent]) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > self.max_line:
            events.append(LineTooLong(len(raw)))
        else:
            events.append(decode_line(raw))


# ---------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """The grammar of one slash command; its handler lives with the hub's commands."""

    name: str
    min_args: int
    max_args: int  # the last argument takes the rest of the line
    usage: str
    summary: str


COMMAND_SPECS: dict[str, CommandSpec] = {
    spec.name: spec
    for spec in (
        CommandSpec("nick", 1, 1, "/nick NAME", "change your nickname"),
        CommandSpec("join", 1, 1, "/join ROOM", "leave this room and enter ROOM (made on first join)"),
        CommandSpec("rooms", 0, 0, "/rooms", "list the rooms with their member counts"),
        CommandSpec("who", 0, 0, "/who", "list the nicknames in your room"),
        CommandSpec("msg", 2, 2, "/msg NICK text", "send a private message to NICK"),
        CommandSpec("me", 1, 1, "/me text", "send an action (* NICK text)"),
        CommandSpec("stats", 0, 0, "/stats", "how many are connected, and in which rooms"),
        CommandSpec("register", 1, 1, "/register PASSWORD", "register your nickname (needs a server with a store)"),
        CommandSpec("login", 2, 2, "/login NICK PASSWORD", "become NICK, a registered nickname"),
        CommandSpec("logout", 0, 0, "/logout", "log out (you keep the name until you change it)"),
        CommandSpec("password", 2, 2, "/password OLD NEW", "change your password"),
        CommandSpec("history", 0, 1, "/history [N]", "the last N lines of your room (default 20, at most 500)"),
        CommandSpec("help", 0, 0, "/help", "this list"),
        CommandSpec("quit", 0, 1, "/quit [reason]", "leave the chat (so does a line 'exit')"),
    )
}


@dataclass(frozen=True, slots=True)
class Chat:
    """A chat message for everyone else in the sender's room."""

    text: str


@dataclass(frozen=True, slots=True)
class Quit:
    """The client leaves (``exit`` or ``/quit [reason]``)."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class Command:
    """A known slash command with at least its minimum number of arguments."""

    name: str
    args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Invalid:
    """A line the protocol refuses; the sender gets ``*** Error: <message>``."""

    message: str


Request = Union[Chat, Quit, Command, Invalid]


def is_plain_chat(text: str) -> bool:
    """True when ``parse_line(text)`` is ``Chat(text)``: not a command, not blank, not an
    exit. The relay's fast path: a chat line is checked without making a ``Chat``."""
    return text[:1] != "/" and text.strip() not in _NOT_CHAT


_NOT_CHAT = ("", "exit")  # a line that strips to one of these is blank or an exit


def plain_chat_count(events: list[Any]) -> int:
    """How many of a chunk's framer events, from the first, are lines ``is_plain_chat``
    passes (then each is exactly ``parse_line``'s ``Chat`` of it).

    Usually all: a chunk whose lines each begin with a printable character other than a
    space, ``/`` or ``e`` holds no command, blank line or exit (a line that strips to
    ``exit`` begins with ``e`` or with whitespace, and the only printable whitespace is the
    space). That is one look at each line's first character instead of a call and a strip
    per line; any other chunk is looked at line by line."""
    try:
        heads = {event[:1] for event in events}
    except TypeError:  # an event that is no line (LineTooLong, a wrong door)
        heads = None
    if heads is not None and "" not in heads:
        first = "".join(heads)
        if first.isprintable() and " " not in first and "/" not in first and "e" not in first:
            return len(events)
    count = 0
    for event in events:
        if event.__class__ is not str or not is_plain_chat(event):
            break
        count += 1
    return count


def parse_line(text: str) -> Request | None:
    """What one received (already decoded) line asks for; None for a blank line."""
    if text[:1] != "/":
        if text == "exit":
            return Quit()
        if text.isspace() or not text:
            return None
        if text.strip() == "exit":
            return Quit()
        return Chat(text)
    if text[:2] == "//":
        return Chat(text[1:])
    head, _, rest = text[1:].partition(" ")
    name = head.lower()
    spec = COMMAND_SPECS.get(name)
    if spec is None:
        shown = strip_controls(head)[: limits.MAX_NICK] or ""
        return Invalid(f"unknown command /{shown}; type /help for the list")
    rest = rest.strip()
    args: tuple[str, ...]
    if spec.max_args == 0 or not rest:
        args = ()
    else:
        args = tuple(rest.split(None, spec.max_args - 1))
    if len(args) < spec.min_args:
        return Invalid(f"usage: {spec.usage}")
    if name == "quit":
        return Quit(args[0] if args else "")
    return Command(name, args)


# ------------------------------------------------------------------------------- names

_NICK_RE = re.compile(r"[A-Za-z0-9_\-\[\]{}|^]{1,%d}" % limits.MAX_NICK)
_ROOM_RE = re.compile(r"[A-Za-z0-9_\-#.]{1,%d}" % limits.MAX_ROOM)


def valid_nick(name: str) -> bool:
    return _NICK_RE.fullmatch(name) is not None


def valid_room(name: str) -> bool:
    return _ROOM_RE.fullmatch(name) is not None


def fold(name: str) -> str:
    """The key under which a nickname or room is unique: names are ASCII, case ignored."""
    return name.lower()


# ---------------------------------------------------------------------- server replies
# Each returns the complete line as bytes, encoded once: a broadcast hands the same
# bytes object to every recipient.


def chat_line(nick: str, text: str) -> bytes:
    return f"{nick}: {text}\n".encode()


def chat_lines(nick: str, texts: list[str] | tuple[str, ...]) -> bytes:
    """``chat_line`` for each text, in one piece (one join and one encode for them all)."""
    if not texts:
        return b""
    head = f"{nick}: "
    return (head + f"\n{head}".join(texts) + "\n").encode()


def action_line(nick: str, text: str) -> bytes:
    return f"* {nick} {text}\n".encode()


def private_line(nick: str, text: str) -> bytes:
    return f"*{nick}* {text}\n".encode()


def notice(text: str) -> bytes:
    return f"*** {text}\n".encode()


def error(text: str) -> bytes:
    return f"*** Error: {text}\n".encode()


def welcome(nick: str, room: str) -> bytes:
    return notice(f"Welcome, {nick}! You are in {room}. Type /help for commands.")


def joined(nick: str, room: str) -> bytes:
    return notice(f"{nick} joined {room}")


def left(nick: str, room: str) -> bytes:
    return notice(f"{nick} left {room}")


def renamed(old: str, new: str) -> bytes:
    return notice(f"{old} is now known as {new}")


def quit_line(nick: str, reason: str = "") -> bytes:
    return notice(f"{nick} quit ({reason})" if reason else f"{nick} quit")


def line_too_long(max_line: int) -> bytes:
    return error(f"line too long (more than {max_line} bytes); it was discarded")


SERVER_FULL = error("server full")
TOO_MANY_FROM_ADDRESS = error("too many connections from your address")
SHUTTING_DOWN = notice("Server shutting down")


def help_lines() -> list[bytes]:
    lines = [notice("Commands:")]
    lines += [notice(f"  {spec.usage:<21} {spec.summary}") for spec in COMMAND_SPECS.values()]
    lines.append(notice("  //text                send a chat line that starts with /"))
    lines.append(notice("Any other line is a chat message to everyone in your room."))
    return lines


# ------------------------------------------------------------------ reading the replies


@dataclass(frozen=True, slots=True)
class ServerLine:
    """One line from the server, classified for display (used by clients)."""

    kind: str  # "chat", "action", "private", "notice", "error" or "other"
    nick: str
    text: str


_PRIVATE_RE = re.compile(r"\*([^*\s]+)\* (.*)", re.S)
_CHAT_RE = re.compile(r"([^\s:*][^\s:]*): (.*)", re.S)


def classify(line: str) -> ServerLine:
    if line.startswith("*** Error: "):
        return ServerLine("error", "", line[len("*** Error: ") :])
    if line.startswith("*** "):
        return ServerLine("notice", "", line[4:])
    if line.startswith("* "):
        nick, _, text = line[2:].partition(" ")
        return ServerLine("action", nick, text)
    match = _PRIVATE_RE.fullmatch(line)
    if match:
        return ServerLine("private", match.group(1), match.group(2))
    match = _CHAT_RE.fullmatch(line)
    if match:
        return ServerLine("chat", match.group(1), match.group(2))
    return ServerLine("other", "", line)
