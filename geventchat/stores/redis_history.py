"""History in Redis (``--redis-url``): one stream per room, shared by every process.

``XADD ... MAXLEN ~ N`` keeps about the last N lines of a room, ``XREVRANGE`` reads the
newest. Each line is written once, by the process that relayed it; any process (and any
``--workers`` worker) reads the same stream. The relay's ``record`` only queues; a writer
greenlet sends what is queued in one pipeline as soon as it can (Redis is a network
peer: waiting on it yields to the loop). A read first sends what this process still has
queued, so a member never misses its own server's latest lines, each sender's in order.

With Redis unreachable, relaying goes on: lines wait (bounded) and are written when it
answers again; failures are counted and logged once a minute at most; reads give nothing.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import gevent
import gevent.event
import gevent.lock

from geventchat.core.history import UNAVAILABLE, Entry, HistoryUnavailable
from geventchat.stores.counters import StoreCounters
from geventchat.stores.runs import ACTION, COUNT, NICK, ROOM, TEXT, TIME, Run, make_run
from geventchat.stores.sqlitedb import StoreError

log = logging.getLogger("geventchat")

# Seconds for one Redis call before it counts as failed: a join waits at most about this
# long for its block when Redis stops answering (and not at all once that is known).
CALL_TIMEOUT = 2.0
# Seconds between writes at most (the writer also wakes at once when lines come).
FLUSH_INTERVAL = 0.5
RETRY_INTERVAL = 2.0
BATCH_MAX = 2000
PENDING_MAX = 1_000_000
CLOSE_TIMEOUT = 3.0


class RedisHistory:
    name = "redis"
    reads_wait = True

    def __init__(self, url: str, keep: int, *, prefix: str = "geventchat") -> None:
        try:
            import redis
        except ImportError:
            raise StoreError("Error: --redis-url needs the redis package: pip install redis") from None
        self._errors = (redis.RedisError, OSError)
        try:
            self.redis = redis.Redis.from_url(
                url,
                socket_timeout=CALL_TIMEOUT,
                socket_connect_timeout=CALL_TIMEOUT,
                socket_keepalive=True,
                decode_responses=True,
            )
        except ValueError as exc:
            raise StoreError(f"Error: bad --redis-url {url!r}: {exc}") from None
        self.keep = keep
        self.prefix = prefix + ":history:"
        self._counters = StoreCounters()
        # runs (stores/runs.py): a tuple in the relay's hot path; the writer makes the
        # stream entry's fields, one entry per run
        self._pending: deque[Run] = deque()
        self._recorded = 0
        self._wake = gevent.event.Event()
        self._sending = gevent.lock.Semaphore()  # one batch at a time: each sender's order holds
        self._closing = False
        self._failed_at = float("-inf")  # monotonic time of the last failed call; none since a success
        self._writer = gevent.spawn(self._run)

    @property
    def counters(self) -> StoreCounters:
        self._counters.lines_recorded = self._recorded
        return self._counters

    def key(self, room_key: str) -> str:
        return self.prefix + room_key

    def record(self, room_key: str, nick: str, texts: Sequence[str], action: bool = False) -> None:
        self._pending.append(make_run(0, room_key, time.time(), nick, texts, action))
        self._recorded += len(texts)
        if not self._wake.is_set():
            self._wake.set()

    def recent(self, room_key: str, count: int) -> list[Entry]:
        count = min(count, self.keep)
        if count < 1:
            return []
        if time.monotonic() - self._failed_at < RETRY_INTERVAL or not self._send():  # ours first: the read has them
            raise HistoryUnavailable(UNAVAILABLE)  # Redis failed a moment ago: no waiting on it
        try:
            rows: Any = self.redis.xrevrange(self.key(room_key), count=count)
        except self._errors as exc:
            self._failed_at = time.monotonic()
            self._counters.read_failed(self.name, exc)
            raise HistoryUnavailable(UNAVAILABLE) from None
        entries = []
        for _, fields in reversed(rows):  # each entry is a run of one or more lines
            try:
                when, nick, action, text = float(fields["t"]), fields["n"], fields.get("a") == "1", fields["x"]
            except (KeyError, ValueError):
                continue  # not one of ours: skip it
            entries += [Entry(when, nick, line, action) for line in text.split("\n")]
        # A stream is in the order lines reached Redis; each process writes a little after
        # relaying, so a reply relayed elsewhere may be written before the line it answers.
        # The relay times put them back in the order members saw them (the sort is stable:
        # each sender's lines, relayed by one process, keep their order).
        entries.sort(key=lambda entry: entry.time)
        return entries[-count:]

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        with gevent.Timeout(CLOSE_TIMEOUT, False):  # type: ignore[arg-type]
            while self._pending and self._send():
                pass
        if self._pending:
            log.warning("History store (redis): %d lines could not be written", sum(run[COUNT] for run in self._pending))
        self._writer.kill(block=True, timeout=1)
        self.redis.close()

    def _run(self) -> None:
        while True:
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            if self._pending and not self._send():
                gevent.sleep(RETRY_INTERVAL)

    def _send(self) -> bool:
        """Write what is queued, batch by batch; False if Redis failed (lines kept)."""
        with self._sending:
            pending = self._pending
            while pending:
                batch = [pending.popleft() for _ in range(min(len(pending), BATCH_MAX))]
                lines = sum(run[COUNT] for run in batch)
                started = time.perf_counter()
                try:
                    pipe = self.redis.pipeline(transaction=False)
                    for run in batch:
                        fields: dict[Any, Any] = {"t": repr(run[TIME]), "n": run[NICK], "a": run[ACTION], "x": run[TEXT]}
                        pipe.xadd(self.key(run[ROOM]), fields, maxlen=self.keep, approximate=True)
                    pipe.execute()
                except self._errors as exc:
                    self._failed_at = time.monotonic()
                    pending.extendleft(reversed(batch))
                    while len(pending) > PENDING_MAX:
                        pending.popleft()
                    self._counters.pending = sum(run[COUNT] for run in pending)
                    self._counters.write_failed(lines, self.name, exc)
                    return False
                self._failed_at = float("-inf")
                self._counters.pending = sum(run[COUNT] for run in pending) if pending else 0
                self._counters.batch_written(lines, time.perf_counter() - started)
            return True
