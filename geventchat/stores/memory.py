"""History in memory (the default): the last ``--history N`` lines of each room, all rooms
within ``--history-memory`` (least recently written rooms go first); goes with the process."""

from __future__ import annotations

from collections.abc import Sequence
from time import time as _now

from geventchat.core.history import Entry
from geventchat.stores.counters import StoreCounters
from geventchat.stores.roommemory import DEFAULT_BUDGET_MIB, MIB, RoomMemory
from geventchat.stores.runs import make_run


class MemoryHistory:
    name = "memory"
    reads_wait = False

    def __init__(self, keep: int, *, memory: int = DEFAULT_BUDGET_MIB * MIB) -> None:
        if keep < 1:
            raise ValueError("a history store keeps at least one line per room")
        self.keep = keep
        self.rooms = RoomMemory(memory, keep, trim_current=True)
        self._recorded = 0
        self._counters = StoreCounters()

    @property
    def counters(self) -> StoreCounters:
        self._counters.lines_recorded = self._counters.lines_stored = self._recorded
        self._counters.memory_seen(self.rooms)
        return self._counters

    def record(self, room_key: str, nick: str, texts: Sequence[str], action: bool = False) -> None:
        self.rooms.add(room_key, make_run(self._recorded, room_key, _now(), nick, texts, action))
        self._recorded += len(texts)

    def recent(self, room_key: str, count: int) -> list[Entry]:
        lines = self.rooms.get(room_key)
        return lines.recent(count) if lines is not None and count > 0 else []

    def close(self) -> None:
        pass
