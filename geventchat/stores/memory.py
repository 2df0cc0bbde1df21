"""History in memory (the default): the last ``--history N`` lines of each room; goes with
the process."""

from __future__ import annotations

from collections.abc import Sequence
from time import time as _now

from geventchat.core.history import Entry
from geventchat.stores.counters import StoreCounters
from geventchat.stores.runs import RoomLines, make_run


class MemoryHistory:
    name = "memory"

    def __init__(self, keep: int) -> None:
        if keep < 1:
            raise ValueError("a history store keeps at least one line per room")
        self.keep = keep
        self.rooms: dict[str, RoomLines] = {}
        self._recorded = 0
        self._counters = StoreCounters()

    @property
    def counters(self) -> StoreCounters:
        self._counters.lines_recorded = self._counters.lines_stored = self._recorded
        return self._counters

    def record(self, room_key: str, nick: str, texts: Sequence[str], action: bool = False) -> None:
        lines = self.rooms.get(room_key)
        if lines is None:
            lines = self.rooms[room_key] = RoomLines(self.keep)
        lines.add(make_run(self._recorded, room_key, _now(), nick, texts, action))
        self._recorded += len(texts)

    def recent(self, room_key: str, count: int) -> list[Entry]:
        lines = self.rooms.get(room_key)
        return lines.recent(count) if lines is not None and count > 0 else []

    def close(self) -> None:
        pass
