"""The byte budget of the rooms' lines kept in memory (stores/roommemory.py), on the stores
that use it: the memory store and the SQLite store's cache (a real file)."""

from __future__ import annotations

from geventchat.stores.memory import MemoryHistory
from geventchat.stores.roommemory import RoomMemory
from geventchat.stores.runs import ROOM_OVERHEAD, make_run, run_bytes
from geventchat.stores.sqlite_history import SQLiteHistory

LINE = "x" * 1000


def run(room: str, text: str = LINE, first_id: int = 0):
    return make_run(first_id, room, 1.0, "alice", [text], False)


def one_room() -> int:
    return ROOM_OVERHEAD + run_bytes(run("r"))


def consistent(memory: RoomMemory) -> None:
    """What the budget counts is what the rooms hold, run by run."""
    for lines in memory.rooms.values():
        assert lines.bytes == ROOM_OVERHEAD + sum(run_bytes(r) for r in lines.runs)
    assert memory.bytes == sum(lines.bytes for lines in memory.rooms.values())
    assert memory.bytes <= memory.budget


def test_least_recently_written_rooms_go_first_and_the_total_stays_within_the_budget():
    memory = RoomMemory(3 * one_room() + run_bytes(run("a", "x" * 10)), 10)
    for room in ("a", "b", "c"):
        memory.add(room, run(room))
    assert list(memory.rooms) == ["a", "b", "c"] and memory.rooms_evicted == 0
    memory.get("a")  # a read is not a write
    memory.add("a", run("a", "x" * 10))
    memory.add("d", run("d"))
    assert list(memory.rooms) == ["c", "a", "d"]  # b was written least recently
    assert memory.rooms_evicted == 1
    consistent(memory)
    for i in range(1000):  # one client, many rooms
        memory.add(f"r{i}", run(f"r{i}", first_id=i))
        consistent(memory)
    assert list(memory.rooms) == ["r997", "r998", "r999"]
    assert memory.rooms_evicted == 1001


def test_a_room_trimmed_to_its_lines_gives_its_bytes_back():
    memory = RoomMemory(10 * one_room(), 3)
    for i in range(50):
        memory.add("a", run("a", f"{i}" * 500, first_id=i))
    assert memory.rooms["a"].total == 3
    consistent(memory)


def test_a_room_alone_over_the_budget_keeps_its_newest_run_when_trim_current():
    memory = RoomMemory(3 * one_room(), 1000, trim_current=True)
    for i in range(20):
        memory.add("a", run("a", first_id=i))
    consistent(memory)
    assert [r[0] for r in memory.rooms["a"].runs][-1] == 19
    tiny = RoomMemory(1, 1000, trim_current=True)  # even below one run: the newest stays
    tiny.add("a", run("a", first_id=1))
    tiny.add("a", run("a", first_id=2))
    assert [r[0] for r in tiny.rooms["a"].runs] == [2]
    whole = RoomMemory(3 * one_room(), 10)  # the SQLite cache: the written room stays whole
    for i in range(5):
        whole.add("a", run("a", first_id=i))
    assert whole.rooms["a"].total == 5


def test_the_memory_store_forgets_evicted_rooms_and_keeps_the_recent_ones():
    store = MemoryHistory(1000, memory=5 * one_room())
    for i in range(100):
        store.record(f"r{i}", "alice", [LINE])
    assert store.recent("r0", 20) == []
    assert [entry.text for entry in store.recent("r99", 20)] == [LINE]
    counters = store.counters
    assert counters.memory_rooms == len(store.rooms.rooms) <= 5
    assert counters.rooms_evicted == 100 - counters.memory_rooms
    assert 0 < counters.memory_bytes <= counters.memory_budget == 5 * one_room()
    assert counters.lines_recorded == 100


def test_the_sqlite_cache_drops_entries_but_a_join_reads_the_file_and_the_queue(tmp_path):
    path = str(tmp_path / "chat.db")
    # A long interval: the first rooms' lines are still queued when their entries go.
    store = SQLiteHistory(path, 1000, flush_interval=60, memory=5 * one_room())
    try:
        for i in range(100):
            store.record(f"r{i}", "alice", [f"line {i}"])
        counters = store.counters
        assert counters.rooms_evicted > 0 and counters.memory_bytes <= counters.memory_budget
        assert counters.pending == 100
        assert store._cache.get("r0") is None
        assert [entry.text for entry in store.recent("r0", 20)] == ["line 0"]  # from the queue
        assert [entry.text for entry in store.recent("r99", 20)] == ["line 99"]
    finally:
        store.close()
    store = SQLiteHistory(path, 1000, memory=5 * one_room())
    try:
        for i in range(100):  # every room from the file, the cache staying within its budget
            assert [entry.text for entry in store.recent(f"r{i}", 20)] == [f"line {i}"]
            assert store.counters.memory_bytes <= store.counters.memory_budget
        store.record("r3", "alice", ["after"])
        assert [entry.text for entry in store.recent("r3", 20)] == ["line 3", "after"]
    finally:
        store.close()
