"""The rooms' lines a store keeps in memory, within one byte budget (``--history-memory``).

Without it every room ever written to would keep its lines for the life of the process, so
one client doing ``/join r1``, ``/join r2``, ... with a line in each could grow the server
without bound (contract §4). Each room's bytes are counted as runs come and go
(``RoomLines.bytes``, from ``run_bytes``: an O(1) estimate, once per recorded run, never per
recipient or per line); when the total passes the budget, whole rooms go, least recently
written first. The memory store loses those rooms' lines; the SQLite store only its cache
entry (the file keeps the lines; the next join reads them from it).
"""

from __future__ import annotations

from collections import OrderedDict

from geventchat.stores.runs import RoomLines, Run

# --history-memory's default, in MiB.
DEFAULT_BUDGET_MIB = 64
MIB = 1024 * 1024


class RoomMemory:
    """Room key -> RoomLines, least recently written first, about ``budget`` bytes in all.

    ``trim_current``: when the room just written alone passes the budget, give up its
    oldest runs too (the memory store, whose ``--history N`` may be large); without it
    (the SQLite cache, a few lines per room) the total may pass the budget by that one
    room."""

    def __init__(self, budget: int, size: int, *, trim_current: bool = False) -> None:
        if budget < 1:
            raise ValueError("a history memory budget is at least one byte")
        self.budget = budget
        self.size = size  # lines per room
        self.trim_current = trim_current
        self.rooms: OrderedDict[str, RoomLines] = OrderedDict()
        self.bytes = 0
        self.rooms_evicted = 0

    def get(self, room_key: str) -> RoomLines | None:
        return self.rooms.get(room_key)

    def room(self, room_key: str) -> RoomLines:
        """The room's lines, made (empty, and counted) if it has none here."""
        lines = self.rooms.get(room_key)
        if lines is None:
            lines = self.rooms[room_key] = RoomLines(self.size)
            self.bytes += lines.bytes
            self._fit(room_key)
        return lines

    def add(self, room_key: str, run: Run) -> None:
        """One recorded run: the room becomes the most recently written."""
        rooms = self.rooms
        lines = rooms.get(room_key)
        if lines is None:
            lines = rooms[room_key] = RoomLines(self.size)
            self.bytes += lines.bytes
        else:
            rooms.move_to_end(room_key)
        before = lines.bytes
        lines.add(run)
        self.bytes += lines.bytes - before
        if self.bytes > self.budget:
            self._fit(room_key)

    def replace(self, room_key: str, runs: list[Run]) -> RoomLines:
        """The room's lines become ``runs`` (a store on disk merging what it read)."""
        lines = self.room(room_key)
        before = lines.bytes
        lines.replace(runs)
        self.bytes += lines.bytes - before
        self.rooms.move_to_end(room_key)  # a read that loads a room makes it recent too
        if self.bytes > self.budget:
            self._fit(room_key)
        return lines

    def _fit(self, current: str) -> None:
        """Evict least recently written rooms until within the budget; ``current`` (the
        room just written, last in the order) is never evicted."""
        rooms = self.rooms
        while self.bytes > self.budget and len(rooms) > 1:
            self.bytes -= rooms.popitem(last=False)[1].bytes
            self.rooms_evicted += 1
        if self.bytes > self.budget and self.trim_current:
            lines = rooms[current]  # alone now
            while self.bytes > self.budget and lines.drop_oldest():
                self.bytes = lines.bytes
