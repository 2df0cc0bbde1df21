"""What a history store has done, for the metrics page (server/metrics.py reads it).

Plain attributes, updated by the store's writer (a thread or a greenlet) and read at
scrape time; each is written by one side only, so no lock is needed.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geventchat.stores.roommemory import RoomMemory

log = logging.getLogger("geventchat")

# Upper bounds (seconds) of the write-batch latency histogram.
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# A store that keeps failing says so at most this often (seconds) on the console.
FAILURE_LOG_INTERVAL = 60.0


class StoreCounters:
    def __init__(self) -> None:
        self.lines_recorded = 0  # lines handed to the store by the relay
        self.lines_stored = 0  # lines written for good (for memory: kept)
        self.write_batches = 0
        self.batch_seconds = 0.0  # sum of the batches' write times
        self.batch_buckets = [0] * len(LATENCY_BUCKETS)  # per bucket (not cumulative)
        self.failed_writes = 0  # lines whose write failed (retried later)
        self.failed_reads = 0
        self.pending = 0  # lines waiting to be written now
        # The rooms' lines held in memory (stores/roommemory.py); budget None: nothing held
        self.memory_budget: int | None = None
        self.memory_bytes = 0
        self.memory_rooms = 0
        self.rooms_evicted = 0
        self._last_failure_log = -FAILURE_LOG_INTERVAL

    def memory_seen(self, rooms: RoomMemory) -> None:
        self.memory_budget, self.memory_bytes = rooms.budget, rooms.bytes
        self.memory_rooms, self.rooms_evicted = len(rooms.rooms), rooms.rooms_evicted

    def batch_written(self, lines: int, seconds: float) -> None:
        self.write_batches += 1
        self.lines_stored += lines
        self.batch_seconds += seconds
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.batch_buckets[i] += 1
                break

    def read_failed(self, store: str, reason: object) -> None:
        """A read (for a join's block or /history) failed: they get no block; logged like writes."""
        self.failed_reads += 1
        self._log(f"History store ({store}): cannot read ({reason}); members get no recent lines meanwhile")

    def _log(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last_failure_log >= FAILURE_LOG_INTERVAL:
            self._last_failure_log = now
            log.warning("%s", text)

    def write_failed(self, lines: int, store: str, reason: object) -> None:
        """Count a failed batch; one console line per FAILURE_LOG_INTERVAL at most."""
        self.failed_writes += lines
        self._log(
            f"History store ({store}): cannot write {lines} lines ({reason}); relaying goes on, "
            f"writes are retried ({self.failed_writes} failed so far)"
        )
