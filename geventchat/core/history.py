"""Room history as it appears on the wire (contract §10), and what a history store is.

Sans-IO: the lines of a replay block, their parsing for the clients, and the small
interface (``HistoryStore``) that the hub records to and reads from. The stores
themselves (memory, SQLite, Redis) live in ``geventchat.stores``.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Sequence
from typing import NamedTuple, Protocol

# /history with no N, and the --history-on-join default.
DEFAULT_REQUEST = 20
# The most lines one /history (or one replay block) asks for: a larger N is taken as this.
MAX_REQUEST = 500
# Lines kept per room by default (--history).
DEFAULT_KEEP = 1000

HISTORY_OFF = "history is turned off on this server"
USAGE = "usage: /history [N]"
BLOCK_END = "*** End of recent messages"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class Entry(NamedTuple):
    """One kept line: when the server relayed it (UTC seconds), who sent it, what."""

    time: float
    nick: str
    text: str
    action: bool = False


class HistoryUnavailable(Exception):
    """A store that cannot be read now (Redis gone); the text is the member's error line."""


UNAVAILABLE = "history is not available right now (its store does not answer); try again later"


class HistoryStore(Protocol):
    """Where the hub keeps room lines. ``record`` is on the relay's hot path: it only
    queues (never waits on a disk or a network); ``recent`` may wait (a first read of a
    room from disk, a Redis round trip) and raises HistoryUnavailable when the store cannot
    be read now; ``close`` writes what is pending, then stops."""

    name: str  # "memory", "sqlite" or "redis": the store label of the metrics
    reads_wait: bool  # whether ``recent`` may wait (on a disk, a network)

    def record(self, room_key: str, nick: str, texts: Sequence[str], action: bool = False) -> None: ...

    def recent(self, room_key: str, count: int) -> list[Entry]: ...

    def close(self) -> None: ...


def stamp(seconds: float) -> str:
    return time.strftime(TIME_FORMAT, time.gmtime(seconds))


def entry_line(entry: Entry) -> str:
    """``*** [YYYY-MM-DD HH:MM:SS] NICK: text`` or ``*** [...] * NICK text`` (UTC)."""
    if entry.action:
        return f"*** [{stamp(entry.time)}] * {entry.nick} {entry.text}"
    return f"*** [{stamp(entry.time)}] {entry.nick}: {entry.text}"


def block(room: str, entries: Sequence[Entry]) -> bytes:
    """The replay block for ``room`` (oldest first); nothing at all when there are no lines."""
    if not entries:
        return b""
    lines = [f"*** Recent messages in {room} ({len(entries)}):"]
    lines += [entry_line(entry) for entry in entries]
    lines.append(BLOCK_END)
    return ("\n".join(lines) + "\n").encode()


def parse_count(args: Sequence[str]) -> int | None:
    """N of ``/history [N]`` (default 20, capped at 500); None when N is not a positive whole number."""
    if not args:
        return DEFAULT_REQUEST
    text = args[0]
    if not (text.isascii() and text.isdigit()) or int(text) < 1 or len(args) > 1:
        return None
    return min(int(text), MAX_REQUEST)


# ------------------------------------------------------------------ for the clients

_START_RE = re.compile(r"\*\*\* Recent messages in (\S+) \((\d+)\):")
_LINE_RE = re.compile(r"\*\*\* \[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] (.*)", re.S)


class HistoryLine(NamedTuple):
    """A line of a replay block, read back: its UTC time and the relayed line it was."""

    time: float  # seconds since the epoch
    line: str  # "NICK: text" or "* NICK text"


def block_start(line: str) -> tuple[str, int] | None:
    """(room, count) if ``line`` opens a replay block."""
    match = _START_RE.fullmatch(line)
    return (match.group(1), int(match.group(2))) if match else None


def parse_history_line(line: str) -> HistoryLine | None:
    """A line inside a block; None if it is not one (a client then shows it as it is)."""
    match = _LINE_RE.fullmatch(line)
    if not match:
        return None
    try:
        parsed = time.strptime(match.group(1), TIME_FORMAT)
    except ValueError:
        return None
    return HistoryLine(float(calendar.timegm(parsed)), match.group(2))


class BlockReader:
    """Follows the lines a client receives and says which belong to a replay block.

    ``feed(line)`` returns ``"start"``, ``"entry"`` (with ``.last`` the parsed line),
    ``"end"`` or ``None`` for a line outside any block. A server that sends no blocks
    gives only ``None``. A block that never ends is closed by its announced count.
    """

    def __init__(self) -> None:
        self.remaining = 0
        self.inside = False
        self.last: HistoryLine | None = None

    def feed(self, line: str) -> str | None:
        if self.inside:
            if line == BLOCK_END:
                self.inside = False
                return "end"
            parsed = parse_history_line(line) if self.remaining > 0 else None
            if parsed is not None:
                self.remaining -= 1
                self.last = parsed
                return "entry"
            self.inside = False  # not what a block holds: show it as any line
        start = block_start(line)
        if start is not None:
            self.inside, self.remaining = True, start[1]
            return "start"
        return None
