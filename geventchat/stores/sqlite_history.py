"""History in an SQLite file (``--db PATH``): survives restarts; written off the event loop.

The relay's ``record`` only appends to two in-memory queues: the room's cache (which
serves every read once the room has been read from disk) and the pending lines. One
writer thread of its own writes the pending lines in batches, one transaction per batch,
every ``flush_interval`` seconds (or sooner when many are waiting), and trims each room
it touched to ``--history N`` lines. So a ``kill -9`` loses at most the last interval
(plus one batch's write time), and ``close`` (the clean stop) writes everything.

A write that fails (a full disk) leaves the batch at the head of the queue: relaying
goes on, the failure is counted and logged once a minute at most, and the writer tries
again until the disk has room. Ids are given here, in the order of relay, so that lines
read from disk merge with lines still in memory exactly (one server per file: a lock
file next to the database keeps a second one out).
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Sequence
from itertools import chain, islice
from typing import Any

import gevent

from geventchat.core.history import UNAVAILABLE, Entry, HistoryUnavailable
from geventchat.stores import sqlitedb
from geventchat.stores.counters import StoreCounters
from geventchat.stores.roommemory import DEFAULT_BUDGET_MIB, MIB, RoomMemory
from geventchat.stores.runs import COUNT, FIRST_ID, ROOM, RoomLines, Run, make_run

log = logging.getLogger("geventchat")

COMPONENT = "history"
# Version i -> i + 1; append a step to change the schema, never edit one.
SCHEMA_STEPS = (
    # 1: a row per line
    """
    CREATE TABLE history (
        id INTEGER PRIMARY KEY,
        room_key TEXT NOT NULL,
        time REAL NOT NULL,
        nick TEXT NOT NULL,
        text TEXT NOT NULL,
        action INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX history_room ON history (room_key, id);
    """,
    # 2: a row per run (stores/runs.py): lines id .. id + lines - 1, text joined by "\n"
    """
    CREATE TABLE history_runs (
        id INTEGER PRIMARY KEY,
        room_key TEXT NOT NULL,
        time REAL NOT NULL,
        nick TEXT NOT NULL,
        action INTEGER NOT NULL DEFAULT 0,
        lines INTEGER NOT NULL DEFAULT 1,
        text TEXT NOT NULL
    );
    INSERT INTO history_runs (id, room_key, time, nick, action, lines, text)
        SELECT id, room_key, time, nick, action, 1, text FROM history;
    DROP TABLE history;
    ALTER TABLE history_runs RENAME TO history;
    CREATE INDEX history_room ON history (room_key, id);
    """,
)

# Lines of each room kept in memory, for the blocks of joins (--history-on-join, 20 by
# default) without a disk read; a larger /history reads the file. Few, because a line can
# be 4 KiB: a room full of long lines, say from a fault injector, must not hold much memory.
# All rooms' caches together stay within --history-memory (stores/roommemory.py): the least
# recently written rooms' entries go, and a join in one of them reads the file again.
CACHE_LINES = 50
# Seconds between writes: a kill -9 loses at most about this much (the contract: 1 s).
FLUSH_INTERVAL = 0.5
# Runs per transaction at most; more waiting wakes the writer before its interval.
BATCH_MAX = 5000
# Runs waiting (a disk that stays full) beyond which the oldest are given up.
PENDING_MAX = 1_000_000
# Seconds between attempts while writes fail.
RETRY_INTERVAL = 2.0
# Seconds the clean stop waits for the writer to write what is pending.
CLOSE_TIMEOUT = 3.0

_COLUMNS = "(id, room_key, time, nick, action, lines, text)"
_INSERT = f"INSERT INTO history {_COLUMNS} VALUES (?, ?, ?, ?, ?, ?, ?)"
# Rows per multi-row INSERT: one statement step for many rows costs a third less CPU than
# executemany's step per row, and lets go of the GIL (which the relay needs) far less often.
# 100 rows = 700 parameters, under every SQLite's limit (999 before 3.32).
CHUNK = 100
_INSERT_CHUNK = f"INSERT INTO history {_COLUMNS} VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * CHUNK)
# Keep the newest runs that hold the room's last N lines; older runs go.
_TRIM = (
    "DELETE FROM history WHERE room_key = ? AND id < (SELECT id FROM "
    "(SELECT id, SUM(lines) OVER (ORDER BY id DESC) AS total FROM history WHERE room_key = ?) "
    "WHERE total >= ? ORDER BY id DESC LIMIT 1)"
)
# Each run holds at least one line: N runs hold the last N lines.
_READ = f"SELECT {_COLUMNS[1:-1]} FROM history WHERE room_key = ? ORDER BY id DESC LIMIT ?"


class SQLiteHistory:
    name = "sqlite"
    reads_wait = True

    def __init__(
        self,
        path: str,
        keep: int,
        *,
        cache_size: int = CACHE_LINES,
        flush_interval: float = FLUSH_INTERVAL,
        memory: int = DEFAULT_BUDGET_MIB * MIB,
    ) -> None:
        self.path = path
        self.keep = keep
        self.cache_size = max(1, min(keep, cache_size))
        self.flush_interval = flush_interval
        self._counters = StoreCounters()
        self._recorded = 0  # lines recorded (the loop's own count: no shared object in the hot path)
        self._dropped = 0  # lines given up (the writer's count: PENDING_MAX while writes fail)
        self._writer = sqlitedb.open_database(path, check_same_thread=False)  # used by the writer thread alone
        try:
            self._lock_file = _lock(path)
        except BaseException:
            self._writer.close()
            raise
        try:
            sqlitedb.migrate(self._writer, COMPONENT, SCHEMA_STEPS, path)
            last = self._writer.execute("SELECT id + lines FROM history ORDER BY id DESC LIMIT 1").fetchone()
            self._next_id = last[0] if last else 1
            self._reader = sqlitedb.open_database(path, check_same_thread=False)
        except BaseException:
            self._writer.close()
            os.close(self._lock_file)
            raise
        self._read_lock = threading.Lock()
        self._cache = RoomMemory(memory, self.cache_size)
        self._pending: deque[Run] = deque()  # appended by the loop, popped by the writer
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
        self._thread.start()

    @property
    def counters(self) -> StoreCounters:
        # Each figure is written by one side only (the loop, or the writer): no lock needed,
        # and nothing iterates the queue the other side is changing.
        self._counters.lines_recorded = self._recorded
        self._counters.pending = self._recorded - self._counters.lines_stored - self._dropped
        self._counters.memory_seen(self._cache)
        return self._counters

    # ------------------------------------------------------------ the event loop's side

    def record(self, room_key: str, nick: str, texts: Sequence[str], action: bool = False) -> None:
        run = make_run(self._next_id, room_key, time.time(), nick, texts, action)
        self._next_id += len(texts)
        self._cache.add(room_key, run)
        pending = self._pending
        pending.append(run)
        self._recorded += len(texts)
        if len(pending) >= BATCH_MAX and not self._wake.is_set():
            self._wake.set()

    def recent(self, room_key: str, count: int) -> list[Entry]:
        count = min(count, self.keep)
        if count < 1:
            return []
        cache = self._cache.get(room_key)
        if cache is None or not cache.loaded:
            cache = self._load(room_key)
        if count <= self.cache_size:
            return cache.recent(count)  # a join's block: from memory
        return self._recent_from_disk(room_key, count, cache)

    def _recent_from_disk(self, room_key: str, count: int, cache: RoomLines) -> list[Entry]:
        """More lines than the cache holds (a large /history): read from disk, with the
        lines not written yet (each line once, by its id)."""
        try:
            rows = gevent.get_hub().threadpool.apply(self._read, (room_key, count))
        except sqlite3.Error as exc:
            self._counters.read_failed(self.name, exc)
            raise HistoryUnavailable(UNAVAILABLE) from None
        runs: dict[int, Run] = {row[0]: tuple(row) for row in rows}
        for run in list(self._pending):  # still waiting to be written (list(): one step, no switch)
            if run[ROOM] == room_key:
                runs.setdefault(run[FIRST_ID], run)
        for run in cache.runs:
            runs.setdefault(run[FIRST_ID], run)
        lines = RoomLines(count)
        for first_id in sorted(runs):
            lines.add(runs[first_id])
        return lines.recent(count)

    def _load(self, room_key: str) -> RoomLines:
        """Read the room's last lines from disk (in gevent's threadpool: the loop goes on)
        and merge them with those recorded here meanwhile (the ids tell which are which).
        Once a room's entry may have been evicted with lines not written yet, those are
        taken from the queue too (before the read: a line leaves the queue once it is in
        the file)."""
        waiting: list[Run] = []
        if self._cache.rooms_evicted:
            waiting = [run for run in list(self._pending) if run[ROOM] == room_key]  # list(): one step, no switch
        try:
            rows = gevent.get_hub().threadpool.apply(self._read, (room_key, self.cache_size))
        except sqlite3.Error as exc:
            log.warning("History store (sqlite): cannot read room %s: %s", room_key, exc)
            rows = None
        cache = self._cache.room(room_key)
        if rows is None or cache.loaded:
            return cache
        known = {run[FIRST_ID] for run in cache.runs}
        merged: list[Run] = [tuple(row) for row in reversed(rows) if row[0] not in known]
        known.update(run[FIRST_ID] for run in merged)
        merged += [run for run in waiting if run[FIRST_ID] not in known]
        merged += cache.runs
        merged.sort(key=lambda run: run[FIRST_ID])
        cache = self._cache.replace(room_key, merged)
        cache.loaded = True
        return cache

    def _read(self, room_key: str, count: int) -> list[tuple[Any, ...]]:
        with self._read_lock:
            return self._reader.execute(_READ, (room_key, count)).fetchall()

    def close(self) -> None:
        """Write everything pending (bounded by CLOSE_TIMEOUT), then stop the writer."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        # Joined from a threadpool thread: the loop (and its greenlets) is not frozen meanwhile.
        gevent.get_hub().threadpool.apply(self._thread.join, (CLOSE_TIMEOUT + 1,))
        if self._pending:
            lines = sum(run[COUNT] for run in self._pending)
            log.warning("History store (sqlite): %d lines could not be written to %s", lines, self.path)
        with self._read_lock:
            self._reader.close()
        os.close(self._lock_file)

    # ----------------------------------------------------------- the writer thread

    def _run(self) -> None:
        deadline = None
        while True:
            failed = False
            while self._pending and not failed:
                failed = not self._write_batch()
            if self._closing:
                deadline = deadline or time.monotonic() + CLOSE_TIMEOUT
                if not self._pending or time.monotonic() >= deadline:
                    break
            self._wake.wait(RETRY_INTERVAL if failed and not self._closing else self.flush_interval)
            self._wake.clear()
        self._writer.close()

    def _write_batch(self) -> bool:
        pending = self._pending
        # The batch stays at the head of the queue until it is committed: a read from disk
        # meanwhile finds each line either there or in the file. (list(islice()) runs in C
        # without a switch, so the loop's appends cannot interleave.)
        batch = list(islice(pending, min(len(pending), BATCH_MAX)))
        lines = sum(run[COUNT] for run in batch)
        started = time.perf_counter()
        conn = self._writer
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                whole = len(batch) - len(batch) % CHUNK
                for start in range(0, whole, CHUNK):
                    conn.execute(_INSERT_CHUNK, tuple(chain.from_iterable(batch[start : start + CHUNK])))
                if whole < len(batch):
                    conn.executemany(_INSERT, batch[whole:])
                for room_key in {run[ROOM] for run in batch}:
                    conn.execute(_TRIM, (room_key, room_key, self.keep))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            while len(pending) > PENDING_MAX:  # the batch is still at the head, in order
                self._dropped += pending.popleft()[COUNT]
            self._counters.write_failed(lines, self.name, exc)
            return False
        for _ in range(len(batch)):
            pending.popleft()
        self._counters.batch_written(lines, time.perf_counter() - started)
        return True


def _lock(path: str) -> int:
    """An exclusive lock on PATH.lock, held while the store is open (one server per file)."""
    lock_path = path + ".lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise sqlitedb.StoreError(f"Error: cannot use database {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise sqlitedb.StoreError(f"Error: database {path} is in use by another server") from None
    return fd
