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
from itertools import islice

import gevent

from geventchat.core.history import MAX_REQUEST, Entry
from geventchat.stores import sqlitedb
from geventchat.stores.counters import StoreCounters

log = logging.getLogger("geventchat")

COMPONENT = "history"
# Version i -> i + 1; append a step to change the schema, never edit one.
SCHEMA_STEPS = (
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
)

# Seconds between writes: a kill -9 loses at most about this much (the contract: 1 s).
FLUSH_INTERVAL = 0.5
# Lines per transaction at most; more waiting wakes the writer before its interval.
BATCH_MAX = 5000
# Lines waiting (a disk that stays full) beyond which the oldest are given up.
PENDING_MAX = 1_000_000
# Seconds between attempts while writes fail.
RETRY_INTERVAL = 2.0
# Seconds the clean stop waits for the writer to write what is pending.
CLOSE_TIMEOUT = 3.0

_INSERT = "INSERT INTO history (id, room_key, time, nick, text, action) VALUES (?, ?, ?, ?, ?, ?)"
_TRIM = (
    "DELETE FROM history WHERE room_key = ? AND id < "
    "(SELECT id FROM history WHERE room_key = ? ORDER BY id DESC LIMIT 1 OFFSET ?)"
)
_READ = "SELECT id, time, nick, text, action FROM history WHERE room_key = ? ORDER BY id DESC LIMIT ?"


class _RoomCache:
    __slots__ = ("lines", "loaded")

    def __init__(self, size: int) -> None:
        self.lines: deque[tuple[int, Entry]] = deque(maxlen=size)
        self.loaded = False  # the lines on disk from before this process have been read


class SQLiteHistory:
    name = "sqlite"

    def __init__(self, path: str, keep: int, *, cache_size: int = MAX_REQUEST, flush_interval: float = FLUSH_INTERVAL) -> None:
        self.path = path
        self.keep = keep
        self.cache_size = max(1, min(keep, cache_size))
        self.flush_interval = flush_interval
        self.counters = StoreCounters()
        self._writer = sqlitedb.open_database(path, check_same_thread=False)  # used by the writer thread alone
        try:
            self._lock_file = _lock(path)
        except BaseException:
            self._writer.close()
            raise
        try:
            sqlitedb.migrate(self._writer, COMPONENT, SCHEMA_STEPS, path)
            self._next_id = (self._writer.execute("SELECT max(id) FROM history").fetchone()[0] or 0) + 1
            self._reader = sqlitedb.open_database(path, check_same_thread=False)
        except BaseException:
            self._writer.close()
            os.close(self._lock_file)
            raise
        self._read_lock = threading.Lock()
        self._cache: dict[str, _RoomCache] = {}
        self._pending: deque[tuple] = deque()  # appended by the loop, popped by the writer
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ the event loop's side

    def record(self, room_key: str, nick: str, texts: Sequence[str], action: bool = False) -> None:
        cache = self._cache.get(room_key)
        if cache is None:
            cache = self._cache[room_key] = _RoomCache(self.cache_size)
        now = time.time()
        next_id = self._next_id
        self._next_id = next_id + len(texts)
        flag = 1 if action else 0
        lines, pending = cache.lines, self._pending
        for i, text in enumerate(texts):
            lines.append((next_id + i, Entry(now, nick, text, action)))
            pending.append((next_id + i, room_key, now, nick, text, flag))
        self.counters.lines_recorded += len(texts)
        if len(pending) >= BATCH_MAX and not self._wake.is_set():
            self._wake.set()

    def recent(self, room_key: str, count: int) -> list[Entry]:
        cache = self._cache.get(room_key)
        if cache is None or not cache.loaded:
            cache = self._load(room_key)
        lines = cache.lines
        return [entry for _, entry in islice(lines, max(0, len(lines) - count), None)] if count > 0 else []

    def _load(self, room_key: str) -> _RoomCache:
        """Read the room's last lines from disk (in gevent's threadpool: the loop goes on)
        and merge them with those recorded here meanwhile."""
        try:
            rows = gevent.get_hub().threadpool.apply(self._read, (room_key, self.cache_size))
        except sqlite3.Error as exc:
            log.warning("History store (sqlite): cannot read room %s: %s", room_key, exc)
            rows = None
        cache = self._cache.get(room_key)
        if cache is None:
            cache = self._cache[room_key] = _RoomCache(self.cache_size)
        if rows is None or cache.loaded:
            return cache
        known = {line_id for line_id, _ in cache.lines}
        merged = [(row[0], Entry(row[1], row[2], row[3], bool(row[4]))) for row in reversed(rows) if row[0] not in known]
        merged += cache.lines
        merged.sort(key=lambda line: line[0])
        cache.lines = deque(merged[-self.cache_size :], maxlen=self.cache_size)
        cache.loaded = True
        return cache

    def _read(self, room_key: str, count: int) -> list[tuple]:
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
            log.warning("History store (sqlite): %d lines could not be written to %s", len(self._pending), self.path)
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
        batch = [pending.popleft() for _ in range(min(len(pending), BATCH_MAX))]
        self.counters.pending = len(pending)
        started = time.perf_counter()
        conn = self._writer
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_INSERT, batch)
                for room_key in {line[1] for line in batch}:
                    conn.execute(_TRIM, (room_key, room_key, self.keep - 1))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            pending.extendleft(reversed(batch))  # back at the head, in order
            while len(pending) > PENDING_MAX:
                pending.popleft()
            self.counters.pending = len(pending)
            self.counters.write_failed(len(batch), self.name, exc)
            return False
        self.counters.batch_written(len(batch), time.perf_counter() - started)
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
