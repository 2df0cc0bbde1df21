"""History in memory (the default): a bounded deque per room; goes with the process."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from itertools import islice

from geventchat.core.history import Entry
from geventchat.stores.counters import StoreCounters


class MemoryHistory:
    name = "memory"

    def __init__(self, keep: int) -> None:
        if keep < 1:
            raise ValueError("a history store keeps at least one line per room")
        self.keep = keep
        self.rooms: dict[str, deque[Entry]] = {}
        self.counters = StoreCounters()

    def record(self, room_key: str, nick: str, texts: Sequence[str], action: bool = False) -> None:
        lines = self.rooms.get(room_key)
        if lines is None:
            lines = self.rooms[room_key] = deque(maxlen=self.keep)
        now = time.time()
        lines.extend([Entry(now, nick, text, action) for text in texts])
        self.counters.lines_recorded += len(texts)
        self.counters.lines_stored += len(texts)

    def recent(self, room_key: str, count: int) -> list[Entry]:
        lines = self.rooms.get(room_key)
        if not lines or count < 1:
            return []
        return list(islice(lines, max(0, len(lines) - count), None))

    def close(self) -> None:
        pass
