"""Runs: how every store holds lines, one tuple per ``record`` call.

The relay hands a store the lines of one sender read in one go (``Hub.chat_lines``): they
share the room, the nick, the time and the kind, so they are kept together as one *run*,
``(first_id, room_key, time, nick, action, count, text)``, where ``text`` is the lines
joined by ``"\\n"`` (a relayed line never holds one) and the lines are numbered
``first_id .. first_id + count - 1``. Under load a run holds many lines; recording it
costs one tuple and one ``join``, and writing it one row or one stream entry, whatever
its length. That is what keeps history off the relay's bill.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from sys import getsizeof
from typing import Final

from geventchat.core.history import Entry

Run = tuple[int, str, float, str, int, int, str]
# The fields of a run, by position (Final: mypy knows each field's type by its index).
FIRST_ID: Final = 0
ROOM: Final = 1
TIME: Final = 2
NICK: Final = 3
ACTION: Final = 4
COUNT: Final = 5
TEXT: Final = 6


def make_run(first_id: int, room_key: str, time: float, nick: str, texts: Sequence[str], action: bool) -> Run:
    return (first_id, room_key, time, nick, 1 if action else 0, len(texts), texts[0] if len(texts) == 1 else "\n".join(texts))


# Bytes a run costs beyond its text and nick (its tuple, time, id, a deque slot), and a room
# beyond its runs (its RoomLines, an empty deque's block, its key and dict entry): measured
# with tracemalloc on CPython 3.11, rounded up. What stores/roommemory.py counts.
RUN_OVERHEAD = 160
ROOM_OVERHEAD = 1000


def run_bytes(run: Run) -> int:
    """About what keeping ``run`` in memory costs (getsizeof of a str is O(1): no scan)."""
    return getsizeof(run[TEXT]) + getsizeof(run[NICK]) + RUN_OVERHEAD


def run_lines(run: Run) -> list[str]:
    return [run[TEXT]] if run[COUNT] == 1 else run[TEXT].split("\n")


class RoomLines:
    """The last ``size`` lines of one room (at least; whole runs are kept), oldest first."""

    __slots__ = ("runs", "total", "size", "loaded", "bytes")

    def __init__(self, size: int) -> None:
        self.runs: deque[Run] = deque()
        self.total = 0  # lines in self.runs
        self.size = size
        self.loaded = False  # for a store on disk: what was there before this process is merged in
        self.bytes = ROOM_OVERHEAD  # about what this room holds in memory (run_bytes of each run)

    def add(self, run: Run) -> None:
        runs = self.runs
        runs.append(run)
        self.total += run[COUNT]
        self.bytes += run_bytes(run)
        while self.total - runs[0][COUNT] >= self.size:  # the oldest run is not needed for size lines
            old = runs.popleft()
            self.total -= old[COUNT]
            self.bytes -= run_bytes(old)

    def drop_oldest(self) -> bool:
        """Give up the oldest run, never the newest; False when only one is left."""
        if len(self.runs) < 2:
            return False
        old = self.runs.popleft()
        self.total -= old[COUNT]
        self.bytes -= run_bytes(old)
        return True

    def replace(self, runs: list[Run]) -> None:
        self.runs, self.total, self.bytes = deque(), 0, ROOM_OVERHEAD
        for run in runs:
            self.add(run)

    def recent(self, count: int) -> list[Entry]:
        """The last ``count`` lines (never more than ``size``), oldest first."""
        count = min(count, self.size)
        out: list[Entry] = []
        for run in reversed(self.runs):
            if len(out) >= count:
                break
            action = bool(run[ACTION])
            for text in reversed(run_lines(run)):
                out.append(Entry(run[TIME], run[NICK], text, action))
                if len(out) == count:
                    break
        out.reverse()
        return out
